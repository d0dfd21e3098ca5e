#!/usr/bin/env bash
# N processes of one wm-jax command on this machine, joined by jax.distributed (CPU: gloo).
# Usage: launch/local.sh N wm-jax <command> [args...]
#   WM_JAX_CPU_DEVICES  CPU devices per process, 1 to 1024 (default 1)
#   WM_JAX_PORT         coordinator port on 127.0.0.1, 1 to 65535, free (default: a free one)
#   WM_JAX_HEARTBEAT_SECONDS, WM_JAX_CONNECT_TIMEOUT_SECONDS  whole seconds >= 1 (README)
# A setting out of range is one line naming it, exit 2, before any process starts (empty: unset).
# Exits 0 when every process does; otherwise the others are stopped (SIGTERM, then SIGKILL after
# 30 s) and the first failing process's exit code is returned. SIGTERM/SIGINT to this script are
# passed to every process (training then checkpoints once, together, and exits 0); any still
# running 30 s later is killed. If this script is killed outright, its processes are told
# (WM_JAX_LAUNCHER_PID) and stop as on SIGTERM, so none publishes outputs on its own.
set -uo pipefail
if [ "$#" -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local.sh N wm-jax <command> [args...]  (N: number of processes, >= 1)" >&2
  exit 2
fi
n="$1"
shift

fail() {
  echo "launch/local.sh: error: $1" >&2
  exit 2
}
# NAME HIGH: the variable, when set, is an integer in [1, HIGH] (HIGH empty: no upper bound).
check_whole() {
  local value="${!1}"
  if [ -n "$2" ]; then
    [[ "$value" =~ ^[1-9][0-9]{0,5}$ ]] && [ "$value" -le "$2" ] && return 0
    fail "$1: expected an integer in [1, $2], found '$value'"
  fi
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || fail "$1: expected a whole number >= 1, found '$value'"
}
for setting in WM_JAX_CPU_DEVICES:1024 WM_JAX_PORT:65535 WM_JAX_HEARTBEAT_SECONDS: WM_JAX_CONNECT_TIMEOUT_SECONDS:; do
  name="${setting%%:*}"
  [ -n "${!name:-}" ] && check_whole "$name" "${setting#*:}"
done
if [ -n "${WM_JAX_PORT:-}" ]; then
  python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))' "$WM_JAX_PORT" 2>/dev/null ||
    fail "WM_JAX_PORT: port $WM_JAX_PORT is in use or not ours to open; expected a free port (or leave WM_JAX_PORT unset for one)"
fi

port="${WM_JAX_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export WM_JAX_COORDINATOR="127.0.0.1:${port}" WM_JAX_NUM_PROCESSES="$n" WM_JAX_LAUNCHER_PID="$$"
export WM_JAX_CPU_DEVICES="${WM_JAX_CPU_DEVICES:-1}"
# Persistent compilation cache: a second run of the same shapes skips compilation.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wm-jax/jax}"

pids=()
declare -A running=()
status=0
killer=""
# Signal every process; SIGKILL any still running 30 s after the first stop. The killer's output
# is closed, so callers reading this script's output are not held open by it.
stop_all() {
  kill -s "$1" "${pids[@]}" 2>/dev/null
  [ -n "$killer" ] && return
  (
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep 30 &
    nap=$!
    wait "$nap" && kill -s KILL "${pids[@]}" 2>/dev/null
  ) >/dev/null 2>&1 &
  killer=$!
}
trap 'stop_all TERM' TERM
trap 'stop_all INT' INT

# After the traps: a SIGTERM while processes start stops those started and starts no more.
for ((i = 0; i < n && ${#killer} == 0; i++)); do
  WM_JAX_PROCESS_ID="$i" "$@" &
  pids+=("$!")
  running[$!]=1
done

finished() { # PID CODE
  unset "running[$1]"
  if [ "$2" -ne 0 ] && [ "$status" -eq 0 ]; then
    status="$2"
    echo "launch/local.sh: process with pid $1 exited with $2; stopping the others" >&2
    stop_all TERM
  fi
}

while [ "${#running[@]}" -gt 0 ]; do
  done_pid=""
  wait -n -p done_pid "${!running[@]}" 2>/dev/null
  code=$?
  if [ -n "${done_pid:-}" ]; then
    finished "$done_pid" "$code"
    continue
  fi
  # A trapped signal, or processes that bash has reaped already (wait -n then returns at once with
  # 127, "no such job"): collect those that have exited by pid, whose statuses bash keeps.
  collected=0
  for pid in "${!running[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      finished "$pid" "$?"
      collected=1
    fi
  done
  [ "$collected" -eq 0 ] && [ "$code" -eq 127 ] && sleep 0.1 # exited, not reaped yet: never spin
done
[ -n "$killer" ] && kill "$killer" 2>/dev/null
exit "$status"
