# Pictures and tables for people: per layer (sky cell or custom mosaic) a preview and a
# coverage map, per sky cell a footprint map and the alignment table, for the run the
# screening and layer tables (mvmflow.preview). Marked with report() for `snakemake --report
# report.zip` (captions in report/, one category per sky cell, one subcategory per layer; docs/design.md, "Previews
# and the report"). Made by default (products.previews), under <outdir>/previews/.



localrules:
    report_screening,
    report_align,
    report_layers,


rule layer_preview:
    input:
        product=f"{OUT}/skycells/{{skycell}}/hst_{{skycell}}_{{lkey}}_{{ptype}}.fits",
    output:
        preview=report(
            f"{PREVIEWS}/{{skycell}}/hst_{{skycell}}_{{lkey}}_{{ptype}}_preview.png",
            caption="../report/preview.rst",
            category="{skycell}",
            subcategory="{lkey}_{ptype}",
            labels={"figure": "preview"},
        ),
        coverage=report(
            f"{PREVIEWS}/{{skycell}}/hst_{{skycell}}_{{lkey}}_{{ptype}}_coverage.png",
            caption="../report/coverage.rst",
            category="{skycell}",
            subcategory="{lkey}_{ptype}",
            labels={"figure": "coverage"},
        ),
        stats=f"{PREVIEWS}/{{skycell}}/hst_{{skycell}}_{{lkey}}_{{ptype}}_stats.json",
    wildcard_constraints:
        lkey=LAYER_KEY,
    params:
        size=1000,
    log:
        f"{LOGS}/layer_preview/{{skycell}}/hst_{{skycell}}_{{lkey}}_{{ptype}}.log",
    benchmark:
        f"{LOGS}/benchmarks/layer_preview/{{skycell}}/hst_{{skycell}}_{{lkey}}_{{ptype}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # a few strips of the layer and the preview, whatever the layer's size
        # (docs/design.md, "Previews and the report")
        mem_mb=by_attempt(600),
    run:
        run_job(rule, "preview", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule mosaic_preview:
    input:
        product=f"{OUT}/mosaic/{{mroot}}_{{ptype}}.fits",
    output:
        preview=report(
            f"{PREVIEWS}/mosaic/{{mroot}}_{{ptype}}_preview.png",
            caption="../report/preview_mosaic.rst",
            category="mosaic",
            subcategory="{mroot}_{ptype}",
            labels={"figure": "preview"},
        ),
        coverage=report(
            f"{PREVIEWS}/mosaic/{{mroot}}_{{ptype}}_coverage.png",
            caption="../report/coverage_mosaic.rst",
            category="mosaic",
            subcategory="{mroot}_{ptype}",
            labels={"figure": "coverage"},
        ),
        stats=f"{PREVIEWS}/mosaic/{{mroot}}_{{ptype}}_stats.json",
    params:
        size=1000,
    log:
        f"{LOGS}/mosaic_preview/{{mroot}}_{{ptype}}.log",
    benchmark:
        f"{LOGS}/benchmarks/mosaic_preview/{{mroot}}_{{ptype}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # as layer_preview: bounded whatever the mosaic's size
        mem_mb=by_attempt(600),
    run:
        run_job(rule, "preview", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule footprint_map:
    input:
        records=skycell_records,
        align=skycell_align_dirs,
        plan=PLAN_INPUT,
    output:
        report(
            f"{PREVIEWS}/{{skycell}}/{{skycell}}_footprints.png",
            caption="../report/footprints.rst",
            category="{skycell}",
            subcategory="sky cell",
            labels={"figure": "footprints"},
        ),
    params:
        frames=skycell_frames,
    log:
        f"{LOGS}/footprint_map/{{skycell}}.log",
    benchmark:
        f"{LOGS}/benchmarks/footprint_map/{{skycell}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(600),
    run:
        run_job(rule, "preview_footprints", input, output, params, wildcards, threads,
                resources, log, conda_env)


rule report_align:
    input:
        f"{OUT}/skycells/{{skycell}}/{{skycell}}_align.ecsv",
    output:
        report(
            f"{PREVIEWS}/{{skycell}}/{{skycell}}_align.html",
            caption="../report/align.rst",
            category="{skycell}",
            subcategory="sky cell",
            labels={"figure": "alignment"},
        ),
    params:
        kind="align",
    log:
        f"{LOGS}/report_align/{{skycell}}.log",
    benchmark:
        f"{LOGS}/benchmarks/report_align/{{skycell}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "preview_tables", input, output, params, wildcards, threads, resources,
                log, conda_env)


rule report_screening:
    input:
        accepted=f"{OUT}/screen/accepted.ecsv",
        rejected=f"{OUT}/screen/rejected.ecsv",
    output:
        report(
            f"{PREVIEWS}/screening.html",
            caption="../report/screening.rst",
            category="run",
            subcategory="tables",
            labels={"figure": "screening"},
        ),
    params:
        kind="screening",
    log:
        f"{LOGS}/report_screening.log",
    benchmark:
        f"{LOGS}/benchmarks/report_screening.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "preview_tables", input, output, params, wildcards, threads, resources,
                log, conda_env)


rule report_layers:
    input:
        stats=preview_stats,
        plan=PLAN_INPUT,
    output:
        report(
            f"{PREVIEWS}/layers.html",
            caption="../report/layers.rst",
            category="run",
            subcategory="tables",
            labels={"figure": "layers"},
        ),
    params:
        kind="layers",
    log:
        f"{LOGS}/report_layers.log",
    benchmark:
        f"{LOGS}/benchmarks/report_layers.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "preview_tables", input, output, params, wildcards, threads, resources,
                log, conda_env)
