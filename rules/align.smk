# Alignment: catalogues per exposure (map), WCS solutions per overlap-connected group.


checkpoint align_groups:
    input:
        records=screen_records,
        accepted=f"{OUT}/screen/accepted.ecsv",
    output:
        f"{OUT}/align/groups.json",
    params:
        margin=ALIGN.get("group_margin", 2.0),
    log:
        f"{LOGS}/align_groups.log",
    benchmark:
        f"{LOGS}/benchmarks/align_groups.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(1000),
    run:
        run_job(rule, "align_groups", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule catalog:
    input:
        exposure=input_path,
    output:
        f"{OUT}/catalogs/{{exposure}}.ecsv",
    params:
        catalogs=ALIGN.get("catalogs", {}),
    log:
        f"{LOGS}/catalog/{{exposure}}.log",
    benchmark:
        f"{LOGS}/benchmarks/catalog/{{exposure}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(lambda wildcards, input: max(1000, int(10 * input.size_mb))),
    run:
        run_job(rule, "catalog", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule align:
    input:
        exposures=group_exposures,
        catalogs=group_catalogs,
        records=group_records,
        refcat=align_reference_file,
    output:
        directory(f"{OUT}/align/{{agroup}}"),
    params:
        reference=align_reference(),
        gaia_url=ALIGN.get("gaia_url"),
        align=ALIGN.get("params", {}),
    log:
        f"{LOGS}/align/{{agroup}}.log",
    benchmark:
        f"{LOGS}/benchmarks/align/{{agroup}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(lambda wildcards, input: max(1000, int(4 * input.size_mb))),
    run:
        run_job(rule, "align", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule align_report:
    input:
        align=skycell_align_dirs,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{skycell}}_align.ecsv",
    params:
        members=skycell_keys,
    log:
        f"{LOGS}/align_report/{{skycell}}.log",
    benchmark:
        f"{LOGS}/benchmarks/align_report/{{skycell}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "align_report", input, output, params, wildcards, threads, resources, log,
                conda_env)
