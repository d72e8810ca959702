# Drizzle (map): one partial per (exposure, layer frame).


rule drizzle:
    input:
        exposure=input_path,
        align=solution_dir,
    output:
        f"{OUT}/partials/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.fits",
    params:
        # only what the partial depends on (not the layer's other members), so adding or
        # removing exposures leaves this job's result valid
        frame=lambda wildcards: map_job(wildcards)["frame"],
        drizzle=drizzle_params,
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
