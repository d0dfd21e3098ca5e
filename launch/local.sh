#!/usr/bin/env bash
# N processes of one wm-jax command on this machine, joined by jax.distributed (CPU: gloo).
# Usage: launch/local.sh N wm-jax <command> [args...]
#   WM_JAX_CPU_DEVICES  CPU devices per process (default 1)
#   WM_JAX_PORT         coordinator port on 127.0.0.1 (default: a free one)
# Exits 0 when every process does; otherwise the others are stopped (SIGTERM, then SIGKILL after
# 30 s) and the first failing process's exit code is returned. SIGTERM/SIGINT to this script are
# passed to every process (training then checkpoints once, together, and exits 0).
set -uo pipefail
if [ "$#" -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local.sh N wm-jax <command> [args...]  (N: number of processes, >= 1)" >&2
  exit 2
fi
n="$1"
shift
port="${WM_JAX_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export WM_JAX_COORDINATOR="127.0.0.1:${port}" WM_JAX_NUM_PROCESSES="$n"
export WM_JAX_CPU_DEVICES="${WM_JAX_CPU_DEVICES:-1}"
# Persistent compilation cache: a second run of the same shapes skips compilation.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wm-jax/jax}"

pids=()
declare -A running=()
for ((i = 0; i < n; i++)); do
  WM_JAX_PROCESS_ID="$i" "$@" &
  pids+=("$!")
  running[$!]=1
done

forward() { kill -s "$1" "${pids[@]}" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT

status=0
remaining="$n"
while [ "$remaining" -gt 0 ]; do
  wait -n -p done_pid "${!running[@]}"
  code=$?
  [ -z "${done_pid:-}" ] && continue # interrupted by a forwarded signal: wait again
  unset "running[$done_pid]"
  remaining=$((remaining - 1))
  if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
    status="$code"
    echo "launch/local.sh: process with pid $done_pid exited with $code; stopping the others" >&2
    forward TERM
    # SIGKILL for any still running after 30 s; its own output closed, so callers reading this
    # script's output are not held open by it, and stopped (with its sleep) when all have exited.
    (
      trap 'kill "$nap" 2>/dev/null; exit 0' TERM
      sleep 30 &
      nap=$!
      wait "$nap" && kill -s KILL "${!running[@]}" 2>/dev/null
    ) >/dev/null 2>&1 &
    killer=$!
  fi
  unset done_pid
done
[ -n "${killer:-}" ] && kill "$killer" 2>/dev/null
exit "$status"
