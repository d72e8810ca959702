# Screen: one record per exposure (accepted, or rejected with the reason), and its headers:
# the one read of the exposure's headers; the product rules use the headers file
# (mvmflow.headers; no rule after this one opens an exposure for its headers).


rule screen:
    input:
        exposure=input_path,
    output:
        f"{OUT}/screen/records/{{exposure}}.json",
        headers=f"{OUT}/screen/headers/{{exposure}}.json",
    log:
        f"{LOGS}/screen/{{exposure}}.log",
    benchmark:
        f"{LOGS}/benchmarks/screen/{{exposure}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(lambda wildcards, input: max(500, int(3 * input.size_mb))),
    run:
        run_job(rule, "screen", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule screen_report:
    input:
        records=screen_records,
        # with the glob matches that are not files and second files of one name
        inputs=f"{OUT}/inputs.tsv",
    output:
        accepted=f"{OUT}/screen/accepted.ecsv",
        rejected=f"{OUT}/screen/rejected.ecsv",
    log:
        f"{LOGS}/screen_report.log",
    benchmark:
        f"{LOGS}/benchmarks/screen_report.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "screen_report", input, output, params, wildcards, threads, resources, log,
                conda_env)
