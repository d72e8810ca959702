# Inputs: the list of exposures to process (demo, glob pattern, list file, or the files of a
# region that arrived from MAST, with the report of those that did not: rules/archive.smk).


checkpoint inputs:
    input:
        inputs_sources,
    output:
        f"{OUT}/inputs.tsv",
        **({"missing": f"{OUT}/mast/missing.ecsv"} if ARCHIVE_MODE else {}),
    params:
        spec=config["inputs"],
        files=input_glob_files(),
    log:
        f"{LOGS}/inputs.log",
    benchmark:
        f"{LOGS}/benchmarks/inputs.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "inputs", input, output, params, wildcards, threads, resources, log,
                conda_env)
