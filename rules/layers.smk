# Layers (reduce): each layer reduced tile by tile in one job (mvmflow.tiles.reduce_layer:
# memory bounded by a tile, docs/data_path.md), the product written from its tiles; trailer;
# manifest; exposure-level products.


rule layer:
    input:
        # the final partials (CR-masked when the layer rejects cosmic rays), drizzle order
        partials=layer_partials,
        # the separate partials the final ones are patches of (cosmic-ray layers)
        bases=layer_patch_bases,
        records=layer_records,
        headers=layer_headers,
        align=layer_align_dirs,
        sky=sky_file,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}_{{ptype}}.fits",
    wildcard_constraints:
        root=LAYER_ROOT,
    params:
        layer=layer_entry,
        members=layer_members,
        drizzle=layer_params,
    log:
        f"{LOGS}/layer/{{skycell}}/{{root}}_{{ptype}}.log",
    benchmark:
        f"{LOGS}/benchmarks/layer/{{skycell}}/{{root}}_{{ptype}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    # a layer of several tiles: each tile in strips reduced at once (docs/speed.md, "Threads")
    threads: layer_threads
    resources:
        # one tile's sums at a time (docs/data_path.md)
        mem_mb=by_attempt(layer_tile_mem),
    run:
        run_job(rule, "layer", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule trailer:
    input:
        product=product_of_root,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}_trl.txt",
    params:
        layer_log=log_of_root,
    log:
        f"{LOGS}/trailer/{{skycell}}/{{root}}.log",
    benchmark:
        f"{LOGS}/benchmarks/trailer/{{skycell}}/{{root}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "trailer", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule manifest:
    input:
        products=skycell_products,
        poller=f"{OUT}/skycells/{{skycell}}/{{skycell}}_input.out",
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{skycell}}_manifest.txt",
    log:
        f"{LOGS}/manifest/{{skycell}}.log",
    benchmark:
        f"{LOGS}/benchmarks/manifest/{{skycell}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(500),
    run:
        run_job(rule, "manifest", input, output, params, wildcards, threads, resources, log,
                conda_env)


rule exposure_product:
    input:
        partial=exposure_partial,
        base=exposure_patch_base,
        record=exposure_record,
        headers=exposure_headers,
        align=exposure_align_dirs,
        sky=sky_file,
        plan=PLAN_INPUT,
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}-{{ipppssoo}}_{{ptype}}.fits",
    params:
        layer=layer_entry,
        drizzle=layer_params,
    log:
        f"{LOGS}/exposure_product/{{skycell}}/{{root}}-{{ipppssoo}}_{{ptype}}.log",
    benchmark:
        f"{LOGS}/benchmarks/exposure_product/{{skycell}}/{{root}}-{{ipppssoo}}_{{ptype}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        # one tile at a time, one input
        mem_mb=by_attempt(exposure_mem),
    run:
        run_job(rule, "exposure_product", input, output, params, wildcards, threads, resources, log,
                conda_env)
