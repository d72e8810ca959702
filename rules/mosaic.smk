# Custom mosaic (make_custom_mosaic): one product per layer over all inputs, on one
# projection cell. Map: each exposure drizzled onto its box of the plane. Reduce: one job per
# tile. Write: the product assembled tile by tile (memory bounded by a tile). The reduce and
# write jobs are the sky-cell layers' (scripts/tile.py, scripts/layer.py).


rule mosaic_drizzle:
    input:
        exposure=input_path,
        align=solution_dir,
        crmask=mosaic_crmasks,
        plan=PLAN_INPUT,
    output:
        intermediate(f"{OUT}/mosaic/partials/{{mroot}}_{{ptype}}/{{exposure}}.fits"),
    params:
        frame=mosaic_map_frame,
        drizzle=mosaic_map_params,
    log:
        f"{LOGS}/mosaic_drizzle/{{mroot}}_{{ptype}}/{{exposure}}.log",
    benchmark:
        f"{LOGS}/benchmarks/mosaic_drizzle/{{mroot}}_{{ptype}}/{{exposure}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(lambda wildcards, input: max(1000, int(12 * os.path.getsize(input.exposure) / 1e6))),
    run:
        run_job(rule, "drizzle", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule mosaic_tile:
    input:
        partials=mosaic_tile_partials,
        sky=mosaic_sky_file,
        plan=PLAN_INPUT,
    output:
        intermediate(f"{OUT}/mosaic/tiles/{{mroot}}_{{ptype}}/{{tile}}.fits"),
    params:
        layer=mosaic_layer_entry,
        tile=mosaic_tile_box,
        members=mosaic_members,
        drizzle=mosaic_params,
    log:
        f"{LOGS}/mosaic_tile/{{mroot}}_{{ptype}}/{{tile}}.log",
    benchmark:
        f"{LOGS}/benchmarks/mosaic_tile/{{mroot}}_{{ptype}}/{{tile}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(mosaic_tile_mem),
    run:
        run_job(rule, "tile", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule mosaic_layer:
    input:
        tiles=mosaic_tiles,
        records=mosaic_records,
        headers=mosaic_headers,
        align=mosaic_align_dirs,
        sky=mosaic_sky_file,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/mosaic/{{mroot}}_{{ptype}}.fits",
    params:
        layer=mosaic_layer_entry,
        members=mosaic_members,
        drizzle=mosaic_params,
    log:
        f"{LOGS}/mosaic_layer/{{mroot}}_{{ptype}}.log",
    benchmark:
        f"{LOGS}/benchmarks/mosaic_layer/{{mroot}}_{{ptype}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # histograms and one tile at a time
        mem_mb=by_attempt(mosaic_tile_mem),
    run:
        run_job(rule, "layer", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule mosaic_trailer:
    input:
        product=mosaic_product_of_root,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/mosaic/{{mroot}}_trl.txt",
    params:
        layer_log=mosaic_log_of_root,
    log:
        f"{LOGS}/mosaic_trailer/{{mroot}}.log",
    benchmark:
        f"{LOGS}/benchmarks/mosaic_trailer/{{mroot}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "trailer", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule mosaic_manifest:
    input:
        products=mosaic_products,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/mosaic/{{mroot}}_manifest.txt",
    log:
        f"{LOGS}/mosaic_manifest/{{mroot}}.log",
    benchmark:
        f"{LOGS}/benchmarks/mosaic_manifest/{{mroot}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "manifest", input, output, params, wildcards, threads, resources, log,
                conda_env)
