# Layers (reduce): sum the partials of a layer into its product; trailer; manifest.


rule layer:
    input:
        partials=final_partials_of,
        records=records_of,
        headers=headers_of,
        align=layer_align_dirs,
        sky=sky_file,
        plan=f"{OUT}/plan/plan.json",
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}_{{ptype}}.fits",
    wildcard_constraints:
        root=LAYER_ROOT,
    params:
        layer=layer_of,
        drizzle=layer_params,
    log:
        "logs/layer/{skycell}/{root}_{ptype}.log",
    benchmark:
        "logs/benchmarks/layer/{skycell}/{root}_{ptype}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: mem_for_frame(layer_of(wildcards)),
    script:
        "../scripts/layer.py"


rule trailer:
    input:
        product=product_of_root,
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}_trl.txt",
    params:
        layer_log=log_of_root,
    log:
        "logs/trailer/{skycell}/{root}.log",
    benchmark:
        "logs/benchmarks/trailer/{skycell}/{root}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=500,
    script:
        "../scripts/trailer.py"


rule manifest:
    input:
        products=skycell_products,
        poller=f"{OUT}/skycells/{{skycell}}/{{skycell}}_input.out",
    output:
        f"{OUT}/skycells/{{skycell}}/{{skycell}}_manifest.txt",
    log:
        "logs/manifest/{skycell}.log",
    benchmark:
        "logs/benchmarks/manifest/{skycell}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=500,
    script:
        "../scripts/manifest.py"


rule exposure_product:
    input:
        partial=final_exposure_partial,
        record=exposure_record,
        headers=exposure_headers,
        align=exposure_align_dirs,
        sky=sky_file,
        plan=f"{OUT}/plan/plan.json",
    output:
        f"{OUT}/skycells/{{skycell}}/{{root}}-{{ipppssoo}}_{{ptype}}.fits",
    params:
        layer=layer_of,
        drizzle=layer_params,
    log:
        "logs/exposure_product/{skycell}/{root}-{ipppssoo}_{ptype}.log",
    benchmark:
        "logs/benchmarks/exposure_product/{skycell}/{root}-{ipppssoo}_{ptype}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: mem_for_frame(layer_of(wildcards)),
    script:
        "../scripts/exposure_product.py"
