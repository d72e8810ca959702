# Cutouts (make_the_cut) of every layer product overlapping each configured box, and their
# combinations per instrument, detector, filter and scale (mvm_combine).


rule cutouts:
    input:
        products=cutout_sources,
        plan=cutout_plan,
    output:
        directory(f"{OUT}/cutouts/{{cutid}}/cutouts"),
    params:
        box=cutout_box_of,
    log:
        f"{LOGS}/cutouts/{{cutid}}.log",
    benchmark:
        f"{LOGS}/benchmarks/cutouts/{{cutid}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(1000),
    run:
        run_job(rule, "cutouts", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule combine_cutouts:
    input:
        f"{OUT}/cutouts/{{cutid}}/cutouts",
    output:
        directory(f"{OUT}/cutouts/{{cutid}}/combined"),
    params:
        method=config.get("combine", {}).get("method", "weighted"),
    log:
        f"{LOGS}/combine_cutouts/{{cutid}}.log",
    benchmark:
        f"{LOGS}/benchmarks/combine_cutouts/{{cutid}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(1000),
    run:
        run_job(rule, "combine_cutouts", input, output, params, wildcards, threads, resources, log,
                conda_env)
