# Cutouts of point sources from the WFC3 and WFPC2 PSF databases (docs/archive.md, "HAP
# products and PSF databases"): per entry of the config's psf list, the query table and the
# cutouts under <outdir>/psf/<name>/. The cutouts are downloaded into the mirror
# <resources>/mast/psf/ (never fetched twice) and linked into the entry's directory. With
# the default empty list there are no jobs.


if config.get("psf"):
    try:
        PSF_URL = mast_url(configured=config.get("archive", {}).get("mast_url") or None)
    except ValueError as error:
        sys.exit(f"Config error: {error}")

    rule psf_query:
        # the archive is asked where snakemake runs (the network may be there only)
        localrule: True
        output:
            f"{OUT}/psf/{{psfid}}/sources.ecsv",
        params:
            entry=psf_entry_of,
            url=PSF_URL,
        log:
            f"{LOGS}/psf/{{psfid}}_query.log",
        benchmark:
            f"{LOGS}/benchmarks/psf/{{psfid}}_query.tsv"
        conda:
            "../envs/mvmflow.yaml"
        threads: 1
        resources:
            mem_mb=by_attempt(1000),
        run:
            run_job(rule, "psf", input, output, params, wildcards, threads, resources, log,
                    conda_env)

    rule psf_cutouts:
        localrule: True
        input:
            f"{OUT}/psf/{{psfid}}/sources.ecsv",
        output:
            directory(f"{OUT}/psf/{{psfid}}/cutouts"),
        params:
            entry=psf_entry_of,
            url=PSF_URL,
            mirror=f"{RES}/mast/psf",
            retries=int(config.get("archive", {}).get("retries", 4)),
            timeout=float(config.get("archive", {}).get("timeout", 60)),
        log:
            f"{LOGS}/psf/{{psfid}}_cutouts.log",
        benchmark:
            f"{LOGS}/benchmarks/psf/{{psfid}}_cutouts.tsv"
        conda:
            "../envs/mvmflow.yaml"
        threads: 1
        resources:
            mem_mb=by_attempt(1000),
        run:
            run_job(rule, "psf", input, output, params, wildcards, threads, resources, log,
                    conda_env)
