# Drizzle (map): one partial per (exposure, layer frame).


rule drizzle:
    input:
        exposure=input_path,
        align=solution_dir,
        plan=PLAN_INPUT,
    output:
        intermediate(f"{OUT}/partials/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.fits"),
    params:
        # only what the partial depends on (not the layer's other members), so adding or
        # removing exposures leaves this job's result valid
        frame=map_frame,
        drizzle=map_params,
    log:
        "logs/drizzle/{skycell}/{root}_{ptype}/{exposure}.log",
    benchmark:
        "logs/benchmarks/drizzle/{skycell}/{root}_{ptype}/{exposure}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: max(1000, int(12 * os.path.getsize(input.exposure) / 1e6)),
    script:
        "../scripts/drizzle.py"


# Cosmic-ray rejection (layers the plan marks): median of the separate drizzles (reduce),
# blot + derivative test per exposure (map), final drizzle without the flagged pixels (map).


rule cr_median:
    input:
        partials=separate_partials,
        sky=sky_file,
        plan=PLAN_INPUT,
    output:
        intermediate(f"{OUT}/cr/{{skycell}}/{{root}}_{{ptype}}_median.fits"),
    params:
        layer=layer_entry,
        drizzle=layer_params,
    log:
        "logs/cr_median/{skycell}/{root}_{ptype}.log",
    benchmark:
        "logs/benchmarks/cr_median/{skycell}/{root}_{ptype}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # strips of at most 256 MB (mvmflow.median), whatever the number of exposures
        mem_mb=1000,
    script:
        "../scripts/cr_median.py"


rule cr_mask:
    input:
        exposure=input_path,
        median=f"{OUT}/cr/{{skycell}}/{{root}}_{{ptype}}_median.fits",
        partial=f"{OUT}/partials/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.fits",
        sky=sky_file,
        align=solution_dir,
        plan=PLAN_INPUT,
    output:
        intermediate(f"{OUT}/cr/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}_crmask.fits"),
    params:
        drizzle=layer_params,
    log:
        "logs/cr_mask/{skycell}/{root}_{ptype}/{exposure}.log",
    benchmark:
        "logs/benchmarks/cr_mask/{skycell}/{root}_{ptype}/{exposure}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # measured: 1.55 GB for a 160 MB full-frame ACS/WFC exposure (benchmarks/cr.py)
        mem_mb=lambda wildcards, input: max(1500, int(12 * os.path.getsize(input.exposure) / 1e6)),
    script:
        "../scripts/cr_mask.py"


rule drizzle_cr:
    input:
        exposure=input_path,
        crmask=f"{OUT}/cr/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}_crmask.fits",
        align=solution_dir,
        plan=PLAN_INPUT,
    output:
        intermediate(f"{OUT}/partials_cr/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.fits"),
    params:
        frame=map_frame,
        drizzle=map_params,
    log:
        "logs/drizzle_cr/{skycell}/{root}_{ptype}/{exposure}.log",
    benchmark:
        "logs/benchmarks/drizzle_cr/{skycell}/{root}_{ptype}/{exposure}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: max(1000, int(12 * os.path.getsize(input.exposure) / 1e6)),
    script:
        "../scripts/drizzle.py"
