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
        f"{LOGS}/drizzle/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.log",
    benchmark:
        f"{LOGS}/benchmarks/drizzle/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(lambda wildcards, input: max(1000, int(12 * os.path.getsize(input.exposure) / 1e6))),
    run:
        run_job(rule, "drizzle", input, output, params, wildcards, threads, resources, log,
                conda_env)


# Cosmic-ray rejection (layers the plan marks): median of the separate drizzles (reduce),
# then per exposure blot + derivative test and the final drizzle without the flagged pixels
# (map, one job).


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
        f"{LOGS}/cr_median/{{skycell}}/{{root}}_{{ptype}}.log",
    benchmark:
        f"{LOGS}/benchmarks/cr_median/{{skycell}}/{{root}}_{{ptype}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    # two strips at once (mvmflow.median): the layer's median runs while its exposures'
    # jobs wait for it, so a second core would otherwise idle (docs/speed.md, "Threads")
    threads: 2
    resources:
        # strips in progress of at most 256 MB together (mvmflow.median), whatever the
        # number of exposures
        mem_mb=by_attempt(1000),
    run:
        run_job(rule, "cr_median", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule cr_drizzle:
    # blot + derivative test against the median, then the final drizzle without the flagged
    # pixels, in one job: the exposure is read once (docs/data_path.md, "Pixel maps")
    input:
        exposure=input_path,
        median=f"{OUT}/cr/{{skycell}}/{{root}}_{{ptype}}_median.fits",
        partial=f"{OUT}/partials/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.fits",
        sky=sky_file,
        align=solution_dir,
        plan=PLAN_INPUT,
    output:
        mask=intermediate(f"{OUT}/cr/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}_crmask.fits"),
        partial=intermediate(
            f"{OUT}/partials_cr/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.fits"
        ),
    params:
        layer=layer_params,
        frame=map_frame,
        drizzle=map_params,
    log:
        f"{LOGS}/cr_drizzle/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.log",
    benchmark:
        f"{LOGS}/benchmarks/cr_drizzle/{{skycell}}/{{root}}_{{ptype}}/{{exposure}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # measured: 1.39 GB for a 160 MB full-frame ACS/WFC exposure (benchmarks/cr.py)
        mem_mb=by_attempt(lambda wildcards, input: max(1500, int(12 * os.path.getsize(input.exposure) / 1e6))),
    run:
        run_job(rule, "cr_drizzle", input, output, params, wildcards, threads, resources, log,
                conda_env)
