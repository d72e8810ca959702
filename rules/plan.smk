# Plan (checkpoint): sky cells, poller files, layers, frames and drizzle jobs.


checkpoint plan:
    input:
        records=screen_records,
        accepted=f"{OUT}/screen/accepted.ecsv",
        align=align_dirs,
        detectors=os.path.join(workflow.basedir, "config", "detectors.yaml"),
    output:
        plan=f"{OUT}/plan/plan.json",
        dropped=f"{OUT}/plan/dropped.ecsv",
    params:
        switches={
            key: config[key] for key in ("include_small", "only_cte", "quality_testing")
        },
        layer_method=config["layer_method"],
        skycells=config["skycells"],
        exp_limit=config["exp_limit"],
        detectors=config.get("detectors", {}),
        cosmic_rays=config.get("cosmic_rays", {"default": "auto"}),
        mosaic=config.get("mosaic", {}),
    log:
        "logs/plan.log",
    benchmark:
        "logs/benchmarks/plan.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/plan.py"


rule poller:
    input:
        plan=f"{OUT}/plan/plan.json",
    output:
        f"{OUT}/skycells/{{skycell}}/{{skycell}}_input.out",
    log:
        "logs/poller/{skycell}.log",
    benchmark:
        "logs/benchmarks/poller/{skycell}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=500,
    script:
        "../scripts/poller.py"
