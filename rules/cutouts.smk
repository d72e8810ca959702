# Cutouts (make_the_cut) of every layer product overlapping each configured box, and their
# combinations per instrument, detector, filter and scale (mvm_combine).


rule cutouts:
    input:
        products=cutout_sources,
        plan=PLAN_INPUT,
    output:
        directory(f"{OUT}/cutouts/{{cutid}}/cutouts"),
    params:
        box=cutout_box_of,
    log:
        "logs/cutouts/{cutid}.log",
    benchmark:
        "logs/benchmarks/cutouts/{cutid}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
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
        "logs/combine_cutouts/{cutid}.log",
    benchmark:
        "logs/benchmarks/combine_cutouts/{cutid}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    run:
        run_job(rule, "combine_cutouts", input, output, params, wildcards, threads, resources, log,
                conda_env)
