# mvmflow: Hubble multi-visit mosaics (MVM) on the HAP sky-cell grid.
#
#   snakemake --cores 2                      run on the configured inputs (default: the demo)
#   snakemake --cores 2 --configfile my.yaml
#   snakemake --cores 2 --config outdir=out
#
# The rules live in rules/*.smk, their scripts in scripts/, the science in the mvmflow package.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/simulate.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    print(summary_message())
