# Drizzle (map): one partial per (exposure, layer frame).


rule drizzle:
    input:
        exposure=input_path,
        plan=f"{OUT}/plan/plan.json",
        align=solution_dir,
    output:
        f"{OUT}/partials/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.fits",
    params:
        job=map_job,
        layer=layer_of,
        drizzle=layer_params,
    log:
        "logs/drizzle/{skycell}/{root}_{ptype}/{exposure}.log",
    benchmark:
        "logs/benchmarks/drizzle/{skycell}/{root}_{ptype}/{exposure}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: max(1000, int(12 * input.size_mb)),
    script:
        "../scripts/drizzle.py"
