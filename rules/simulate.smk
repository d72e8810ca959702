# Simulated inputs: the embedded demo region (and any preset), fully offline.


rule simulate:
    output:
        exposures=f"{config['resources']}/{{preset}}/truth/exposures.ecsv",
        sources=f"{config['resources']}/{{preset}}/truth/sources.ecsv",
        refcat=f"{config['resources']}/{{preset}}/truth/refcat.ecsv",
    params:
        seed=config["demo"]["seed"],
        outdir=lambda wildcards: f"{config['resources']}/{wildcards.preset}",
    log:
        f"{LOGS}/simulate/{{preset}}.log",
    benchmark:
        f"{LOGS}/benchmarks/simulate/{{preset}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(4000),
    run:
        run_job(rule, "simulate", input, output, params, wildcards, threads, resources, log,
                conda_env)
