#!/usr/bin/env bash
# One wm-jax command on every host of a Cloud TPU pod slice: one process per host, each using its
# local chips; jax.distributed finds the pod's hosts from the TPU metadata (WM_JAX_DISTRIBUTED=auto).
# Usage: launch/tpu_pod.sh TPU_NAME ZONE wm-jax <command> [args...]
#   WM_JAX_REMOTE_DIR   directory on each host to run from (default: ~/wm-jax, with wm-jax installed)
#   WM_JAX_PROJECT      gcloud project (default: the configured one)
# Paths (store, workdir, --out) must be on storage every host sees (e.g. a Filestore NFS mount;
# the GWAS result store is memory-mapped, so it needs a POSIX file system, not gcsfuse).
set -euo pipefail
if [ "$#" -lt 4 ]; then
  echo "usage: launch/tpu_pod.sh TPU_NAME ZONE wm-jax <command> [args...]" >&2
  exit 2
fi
tpu="$1"
zone="$2"
shift 2
remote_dir="${WM_JAX_REMOTE_DIR:-~/wm-jax}"
project=()
[ -n "${WM_JAX_PROJECT:-}" ] && project=(--project "$WM_JAX_PROJECT")
command="cd $remote_dir && WM_JAX_DISTRIBUTED=auto \
JAX_COMPILATION_CACHE_DIR=\${JAX_COMPILATION_CACHE_DIR:-\$HOME/.cache/wm-jax/jax} $(printf '%q ' "$@")"
# --worker=all runs the command on every host at once; gcloud exits non-zero if any host fails.
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" "${project[@]}" --worker=all --command "$command"
