# Sky (per layer group, before the reduce): relative sky offsets from the overlaps of all
# the group's fine partials, shared by every sky cell so neighbours agree in their overlap.


rule sky:
    input:
        partials=sky_partials,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/sky/{{group}}.json",
    params:
        sky=sky_params,
    log:
        f"{LOGS}/sky/{{group}}.log",
    benchmark:
        f"{LOGS}/benchmarks/sky/{{group}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # one pair of overlapping exposures at a time (mvmflow.skygroup.group_sky_files)
        mem_mb=by_attempt(lambda wildcards, input: max(1000, int(4 * mean_size_mb(input.partials)))),
    run:
        run_job(rule, "sky", input, output, params, wildcards, threads, resources, log,
                conda_env)
