#!/usr/bin/env bash
# The pipeline stage by stage with the command-line tools, at the demo preset's full 48x56x48
# resolution (`wm-jax demo` runs the same stages in one process at 24x28x24, with a manifest).
# Usage: bash launch/demo_one_host.sh [OUT_DIR] [EPOCHS]
# On 2 CPU cores one epoch over the ~1,800 training subjects takes about half an hour (from the
# measured 383 s per 360 subjects); on a GPU it is seconds.
set -euo pipefail
out="${1:-demo_full}"
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
wm-jax report --gwas "$out/gwas/udip" --bfile "$out/cohort/genotypes" --truth "$out/cohort/truth.tsv" \
  --out "$out/report/udip"
wm-jax report --gwas "$out/gwas/roi_fa" --bfile "$out/cohort/genotypes" --truth "$out/cohort/truth.tsv" \
  --out "$out/report/roi_fa"
wm-jax interpret --workdir "$out/train" --udip "$out/udip.tsv" --out "$out/interpret"
