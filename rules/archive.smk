# Region inputs from MAST (docs/archive.md, "Region queries and the workflow"): the query
# checkpoint writes the product table, one download job per file fills the mirror
# (<resources>/mast/), and the inputs job (rules/inputs.smk) takes the files that arrived.
# The input functions are in rules/common.smk.

# Downloads at the same time: each download job holds one mast_transfers; the bound is the
# config's archive.transfers unless --resources mast_transfers=N was given.
if "mast_transfers" not in workflow.global_resources:
    workflow.register_resource("mast_transfers", int(ARCHIVE.get("transfers", 4)))


if ARCHIVE_MODE == "region":

    checkpoint query:
        # the query and the downloads need the network: on a cluster they run where
        # snakemake runs
        localrule: True
        output:
            MAST_TABLE,
        params:
            region=config["inputs"]["mast"],
            url=MAST_URL,
            cache=MAST_QUERIES,
            # switching requery on makes the query again (and refreshes the kept answer)
            requery=bool(ARCHIVE.get("requery", False)),
        log:
            f"{LOGS}/mast/query.log",
        benchmark:
            f"{LOGS}/benchmarks/mast/query.tsv"
        conda:
            "../envs/mvmflow.yaml"
        threads: 1
        resources:
            mem_mb=by_attempt(1000),
        run:
            run_job(rule, "query", input, output, params, wildcards, threads, resources, log,
                    conda_env)


rule download:
    localrule: True
    output:
        f"{OUT}/mast/downloads/{{mastfile}}.json",
    params:
        file=mast_download,
        retry=mast_retry_token,
        retries=int(ARCHIVE.get("retries", 4)),
        backoff=float(ARCHIVE.get("backoff", 1.0)),
        timeout=float(ARCHIVE.get("timeout", 60)),
    wildcard_constraints:
        mastfile=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    log:
        f"{LOGS}/mast/download/{{mastfile}}.log",
    benchmark:
        f"{LOGS}/benchmarks/mast/download/{{mastfile}}.tsv"
    conda:
        "../envs/mvmflow.yaml"
    threads: 1
    resources:
        mem_mb=by_attempt(200),
        mast_transfers=1,
    run:
        run_job(rule, "download", input, output, params, wildcards, threads, resources, log,
                conda_env)
