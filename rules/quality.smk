# Quality files (quality_testing on; env MVM_QUALITY_TESTING): per fine sky-cell layer its
# point-source catalogue (mvmflow.layercat), the WCS-name / astrometric-frame file and the
# overlap cross-match with the neighbouring sky cells' layers (mvmflow.quality), beside the
# layer and listed in the manifest (layer_products, rules/common.smk). Off: no job at all.


rule layer_catalog:
    input:
        product=qa_product,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}_point-cat.ecsv",
    wildcard_constraints:
        root=LAYER_ROOT,
    params:
        version=LAYERCAT_VERSION,
    log:
        f"{LOGS}/quality/{{skycell}}/{{root}}_point-cat.log",
    benchmark:
        f"{LOGS}/benchmarks/quality/{{skycell}}/{{root}}_point-cat.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # one tile of about 1200 x 1200 pixels at a time (mvmflow.layercat)
        mem_mb=by_attempt(1000),
    run:
        run_job(rule, "quality_catalog", input, output, params, wildcards, threads, resources,
                log, conda_env)


rule qa_wcsname:
    input:
        product=qa_product,
        records=qa_records,
        align=qa_align_dirs,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}_mvm_wcsname.json",
    wildcard_constraints:
        root=LAYER_ROOT,
    params:
        mixed_frames=config.get("align", {}).get("mixed_frames", "drop_unaligned"),
        dropped=qa_dropped,
    log:
        f"{LOGS}/quality/{{skycell}}/{{root}}_mvm_wcsname.log",
    benchmark:
        f"{LOGS}/benchmarks/quality/{{skycell}}/{{root}}_mvm_wcsname.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "quality_wcsname", input, output, params, wildcards, threads, resources,
                log, conda_env)


rule qa_crossmatch:
    input:
        product=qa_product,
        catalog=f"{OUT}/skycells/{{skycell}}/{{root}}_point-cat.ecsv",
        neighbours=qa_neighbour_products,
        neighbour_catalogs=qa_neighbour_catalogs,
        exposures=qa_member_exposures,
        catalogs=qa_member_catalogs,
        align=qa_align_dirs,
        refcat=align_reference_file,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}_mvm_overlap_crossmatch.json",
    wildcard_constraints:
        root=LAYER_ROOT,
    params:
        visits=qa_visits,
        members=qa_member_keys,
    log:
        f"{LOGS}/quality/{{skycell}}/{{root}}_mvm_overlap_crossmatch.log",
    benchmark:
        f"{LOGS}/benchmarks/quality/{{skycell}}/{{root}}_mvm_overlap_crossmatch.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # catalogues, the weights read at sampled positions, one chip WCS at a time
        mem_mb=by_attempt(1000),
    run:
        run_job(rule, "quality_crossmatch", input, output, params, wildcards, threads,
                resources, log, conda_env)
