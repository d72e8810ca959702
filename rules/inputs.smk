# Inputs: the list of exposures to process (demo, glob pattern or list file).


checkpoint inputs:
    input:
        inputs_sources(),
    output:
        f"{OUT}/inputs.tsv",
    params:
        spec=config["inputs"],
        files=input_glob_files(),
    log:
        "logs/inputs.log",
    benchmark:
        "logs/benchmarks/inputs.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=500,
    run:
        run_job(rule, "inputs", input, output, params, wildcards, threads, resources, log,
                conda_env)
