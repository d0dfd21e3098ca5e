#!/usr/bin/env bash
# The pipeline on one host, stage by stage, on a simulated cohort (until `wm-jax demo` exists).
# Usage: bash launch/demo_one_host.sh [OUT_DIR] [EPOCHS]
# On 2 CPU cores one training epoch over the 1,800 training subjects takes about half an hour
# (measured: 383 s for 360 subjects); CPU training speed is an open issue.
set -euo pipefail
out="${1:-demo_run}"
epochs="${2:-1}"
mkdir -p "$out"
[ -d "$out/cohort" ] || wm-jax simulate --preset demo --out "$out/cohort"
[ -d "$out/store" ] || wm-jax prepare --subjects "$out/cohort/subjects.tsv" --out "$out/store"
wm-jax train --config demo --store "$out/store" --workdir "$out/train" --config.epochs="$epochs"
wm-jax embed --workdir "$out/train" --store "$out/store" --out "$out/udip.tsv" --step best
wm-jax gwas --bfile "$out/cohort/genotypes" --pheno "$out/udip.tsv" --pheno-name UDIP1-UDIP32 \
  --covar "$out/cohort/covariates.tsv" --maf 0.01 --out "$out/gwas/udip"
wm-jax roi --store "$out/store" --atlas "$out/cohort/atlas.nii.gz" --labels "$out/cohort/atlas_labels.tsv" \
  --out "$out/roi_fa.tsv"
wm-jax gwas --bfile "$out/cohort/genotypes" --pheno "$out/roi_fa.tsv" --covar "$out/cohort/covariates.tsv" \
  --maf 0.01 --out "$out/gwas/roi_fa"
