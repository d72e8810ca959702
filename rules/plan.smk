# Plan (checkpoint): sky cells, poller files, layers, frames, tiles and drizzle jobs, written
# as one file (mvmflow.runplan.RunPlan) that rules/common.smk reads.


checkpoint plan:
    input:
        records=screen_records,
        accepted=f"{OUT}/screen/accepted.ecsv",
        align=align_dirs,
        detectors=os.path.join(workflow.basedir, "config", "detectors.yaml"),
    output:
        plan=PLAN,
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
        tile_size=config.get("tile_size", 4096),
        # layers whose inputs are in different astrometric frames (mvmflow.solution)
        mixed_frames=config.get("align", {}).get("mixed_frames", "drop_unaligned"),
        # the plan file's layout: a new one makes the plan again
        version=PLAN_VERSION,
    log:
        f"{LOGS}/plan.log",
    benchmark:
        f"{LOGS}/benchmarks/plan.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(2000),
    run:
        run_job(rule, "plan", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule poller:
    input:
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{skycell}}_input.out",
    params:
        poller=poller_text,
    log:
        f"{LOGS}/poller/{{skycell}}.log",
    benchmark:
        f"{LOGS}/benchmarks/poller/{{skycell}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "poller", input, output, params, wildcards, threads, resources, log,
                conda_env)
