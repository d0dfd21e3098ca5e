"""The distributed runtime and every device mesh: one place for how work is laid out on devices.

Processes. `initialize()` starts `jax.distributed` once per process, from (first that applies):
  1. explicit arguments (coordinator address, process count, process id);
  2. the environment `launch/local.sh` sets: WM_JAX_COORDINATOR, WM_JAX_NUM_PROCESSES,
     WM_JAX_PROCESS_ID (and WM_JAX_CPU_DEVICES, CPU devices per process);
  3. WM_JAX_DISTRIBUTED=auto: JAX's own cluster detection (SLURM, Open MPI, Cloud TPU pods).
With none of these it does nothing: one process, as before. On CPU, processes talk through gloo.
Every setting is checked before the runtime starts (one line naming it). Process 0 first checks
that the coordinator's port is free; a process that cannot gather every process within
WM_JAX_CONNECT_TIMEOUT_SECONDS ends with one line (JAX's own timeout aborts the process). A
process started by `launch/local.sh` (WM_JAX_LAUNCHER_PID) stops as on SIGTERM when the launcher dies.

Meshes.
  data_mesh()    every device of every process on one `data` axis: training, embedding, PerDI.
                 A global batch is split over it in order, so process p feeds one contiguous
                 slice of the batch (`process_slice`) and reads only those rows.
  local_mesh()   this process's devices on a `blocks` axis: the GWAS, whose variant blocks need no
                 communication; processes split the variants instead (`wm_jax.gwas.plan`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from wm_jax.errors import InputError
from wm_jax.publish import pid_running

log = logging.getLogger("wm_jax")

ENV_COORDINATOR = "WM_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "WM_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "WM_JAX_PROCESS_ID"
ENV_CPU_DEVICES = "WM_JAX_CPU_DEVICES"
ENV_AUTO = "WM_JAX_DISTRIBUTED"
# A process that dies is noticed by the others within this many seconds (their next collective or
# barrier fails), so a job never hangs on a lost peer. WM_JAX_HEARTBEAT_SECONDS overrides it.
HEARTBEAT_SECONDS = 20
ENV_HEARTBEAT = "WM_JAX_HEARTBEAT_SECONDS"
# Processes started minutes apart (a batch scheduler) still meet; one whose peers never come ends
# with an error line after this many seconds. WM_JAX_CONNECT_TIMEOUT_SECONDS overrides it.
CONNECT_TIMEOUT_SECONDS = 300
ENV_CONNECT_TIMEOUT = "WM_JAX_CONNECT_TIMEOUT_SECONDS"
ENV_LAUNCHER_PID = "WM_JAX_LAUNCHER_PID"
MAX_CPU_DEVICES = 1024

_started = False
_barriers = 0


def _from_environment() -> dict | None:
    """The launch settings in the environment, or None when the process was started alone."""
    if os.environ.get(ENV_AUTO) == "auto":
        return {}
    if ENV_COORDINATOR not in os.environ:
        return None
    try:
        settings = {
            "coordinator_address": os.environ[ENV_COORDINATOR],
            "num_processes": int(os.environ[ENV_NUM_PROCESSES]),
            "process_id": int(os.environ[ENV_PROCESS_ID]),
        }
    except (KeyError, ValueError) as err:
        raise InputError(
            f"{ENV_COORDINATOR} is set, so {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be integers ({err})"
        ) from None
    if not 0 <= settings["process_id"] < settings["num_processes"]:
        raise InputError(f"{ENV_PROCESS_ID}={settings['process_id']}: expected 0..{settings['num_processes'] - 1}")
    coordinator_port(settings["coordinator_address"])
    return settings


def coordinator_port(address: str) -> int:
    """The port of a HOST:PORT coordinator address (an InputError naming WM_JAX_COORDINATOR if none)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"{ENV_COORDINATOR}: expected HOST:PORT with a port in [1, 65535], found {address!r}")
    return int(port)


def _env_integer(name: str, default: int, high: int | None = None) -> int:
    """An integer setting in [1, high] from the environment (unset or empty: ``default``)."""
    text = os.environ.get(name, "").strip() or str(default)
    if text.isdigit() and int(text) >= 1 and (high is None or int(text) <= high):
        return int(text)
    expected = f"an integer in [1, {high}]" if high is not None else "a whole number >= 1"
    raise InputError(f"{name}: expected {expected}, found {os.environ.get(name)!r}")


def _check_port_free(address: str) -> None:
    """Process 0 serves the coordinator on this port: a port already in use is an error naming it
    (JAX would end the process with a segmentation fault)."""
    port = coordinator_port(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as err:
            raise InputError(
                f"{ENV_COORDINATOR}={address}: port {port} cannot be opened ({err.strerror}); expected a free "
                "port (launch/local.sh: set WM_JAX_PORT to another, or leave it unset for a free one)"
            ) from None


def _follow_launcher() -> None:
    """When `launch/local.sh` (WM_JAX_LAUNCHER_PID) dies, this process gets SIGTERM and stops as it
    would on the launcher's own SIGTERM: no process goes on to publish outputs alone. The kernel
    sends it (PR_SET_PDEATHSIG) when the launcher is the parent; otherwise a thread watches it."""
    text = os.environ.get(ENV_LAUNCHER_PID, "")
    if not text.isdigit():
        return
    launcher = int(text)
    if os.getppid() == launcher and _parent_death_signal(signal.SIGTERM):
        if os.getppid() != launcher:  # it died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)
        return
    threading.Thread(target=_watch_launcher, args=(launcher,), daemon=True, name="wm-jax-launcher").start()


def _parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` when the parent exits (prctl PR_SET_PDEATHSIG); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(1, int(signum), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _watch_launcher(launcher: int, every_seconds: float = 1.0) -> None:
    while _alive(launcher):
        time.sleep(every_seconds)
    os.kill(os.getpid(), signal.SIGTERM)


def _alive(pid: int) -> bool:
    """Running; a zombie (exited, not yet collected by its parent) is not."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        return pid_running(pid)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    command: str = "library",
) -> bool:
    """Start the distributed runtime (see the module docstring); True when this is a multi-process run.
    Idempotent; must run before anything touches a device. ``command``: the subcommand an error names."""
    global _started
    if _started:
        return jax.process_count() > 1
    if coordinator_address is not None:
        settings = {"coordinator_address": coordinator_address, "num_processes": num_processes}
        settings["process_id"] = process_id
    else:
        settings = _from_environment()
    if settings is None:
        return False
    heartbeat_text = os.environ.get(ENV_HEARTBEAT, str(HEARTBEAT_SECONDS))
    if not heartbeat_text.strip().isdigit() or int(heartbeat_text) == 0:
        raise InputError(f"{ENV_HEARTBEAT}={heartbeat_text!r}: expected a whole number of seconds, at least 1")
    heartbeat = int(heartbeat_text)
    timeout = _env_integer(ENV_CONNECT_TIMEOUT, CONNECT_TIMEOUT_SECONDS)
    cpu_devices = os.environ.get(ENV_CPU_DEVICES, "").strip() and _env_integer(ENV_CPU_DEVICES, 1, MAX_CPU_DEVICES)
    if settings.get("process_id") == 0:
        _check_port_free(settings["coordinator_address"])
    _follow_launcher()
    if cpu_devices:
        jax.config.update("jax_num_cpu_devices", cpu_devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    _connect(settings, heartbeat, timeout, command)
    _started = True
    barrier("started")  # so that the first device collective (which sets up gloo) starts in step
    log.info(
        "process %d of %d: %d local device(s), %d in all",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return jax.process_count() > 1


def _connect(settings: dict, heartbeat: int, timeout: int, command: str) -> None:
    """jax.distributed.initialize, ended with one error line (exit 2) when not every process has
    joined within ``timeout`` seconds. JAX's own limit is set later than ours: at its limit it
    aborts the process with a native stack trace."""

    def give_up() -> None:
        where = settings.get("coordinator_address") or "the cluster's coordinator"
        count = settings.get("num_processes")
        print(
            f"wm-jax {command}: error: {ENV_CONNECT_TIMEOUT}: not every one of "
            f"{count or 'the'} processes joined {where} within {timeout} s; expected each process to be "
            f"started, with the same {ENV_COORDINATOR} and {ENV_NUM_PROCESSES} (or set {ENV_CONNECT_TIMEOUT} "
            "to wait longer)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**settings, heartbeat_timeout_seconds=heartbeat, initialization_timeout=timeout + 60)
    finally:
        watchdog.cancel()


def is_main_process() -> bool:
    """True on the process that writes shared outputs (tables, logs, progress bars)."""
    return jax.process_index() == 0


def barrier(name: str, timeout_seconds: int = 3600) -> None:
    """Every process waits here until all arrive (no-op for one process). A barrier of the
    coordination service, not a device collective: processes may arrive minutes apart (a device
    collective's first use sets up gloo with a 30 s limit), and a lost process is still noticed by
    heartbeat. Every process must pass the same barriers in the same order."""
    global _barriers
    if jax.process_count() == 1:
        return
    _barriers += 1
    from jax._src import distributed  # the coordination-service client; JAX has no public barrier without devices

    distributed.global_state.client.wait_at_barrier(f"wm_jax/{_barriers}/{name}", timeout_seconds * 1000)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (e.g. a stop request)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.asarray(multihost_utils.process_allgather(np.array([flag], np.int32))).any())


def gather_parts(local: np.ndarray) -> np.ndarray:
    """Each process's ``local`` rows (any number), concatenated in process order on every process,
    bit for bit: the rows travel as bytes, since JAX would carry float64 and int64 as 32-bit
    values (x64 is off)."""
    local = np.asarray(local)
    if jax.process_count() == 1:
        return local
    row_bytes = local.dtype.itemsize * int(np.prod(local.shape[1:], dtype=np.int64))
    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(local)], np.int32))).ravel()
    padded = np.zeros((int(sizes.max()), row_bytes), np.uint8)
    padded[: len(local)] = np.ascontiguousarray(local).view(np.uint8).reshape(len(local), row_bytes)
    stacked = np.asarray(multihost_utils.process_allgather(padded))  # (processes, max rows, row bytes)
    rows = np.concatenate([stacked[i, :n] for i, n in enumerate(sizes)])
    return np.ascontiguousarray(rows).view(local.dtype).reshape(len(rows), *local.shape[1:])


def broadcast_text(text: str, limit: int = 8192) -> str:
    """Process 0's ``text`` (UTF-8, at most ``limit`` bytes) on every process."""
    if jax.process_count() == 1:
        return text
    raw = np.zeros(limit, np.uint8)
    encoded = text.encode()[:limit]
    raw[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(raw))).rstrip(b"\0").decode()


def refuse_other_processes(what: str) -> None:
    """One line, exit 2, where a part of a multi-process command runs as one process only."""
    if jax.process_count() > 1:
        raise InputError(f"{what} runs as one process; start it without a launcher")


def on_accelerator(forced: bool | None = None) -> bool:
    """``forced`` where it is given, else whether JAX's default backend is an accelerator (GPU,
    TPU): where the passes that have both forms put work that NumPy does faster on a CPU backend
    (the GWAS's missing-call index and counts, the gene LD products)."""
    return jax.default_backend() != "cpu" if forced is None else forced


def this_process_share(n: int) -> slice:
    """This process's contiguous share of ``n`` items split evenly over the processes."""
    return split_evenly(n, jax.process_count(), jax.process_index())


def data_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    """Every device (of every process, process by process) on one ``data`` axis; ``n_devices``
    takes the first few of one process (tests)."""
    devices = jax.devices()[: n_devices or jax.device_count()]
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def local_mesh(axis: str = "blocks") -> jax.sharding.Mesh:
    """This process's devices on one axis."""
    devices = jax.local_devices()
    return jax.make_mesh((len(devices),), (axis,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def process_slice(mesh: jax.sharding.Mesh, global_batch: int) -> slice:
    """The rows of a ``global_batch`` that this process feeds on ``mesh`` (split along its first axis)."""
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    indices = sharding.addressable_devices_indices_map((global_batch,))
    starts = sorted(index[0].start or 0 for index in indices.values())
    stops = sorted(global_batch if index[0].stop is None else index[0].stop for index in indices.values())
    return slice(starts[0], stops[-1])


def shard_batch(mesh: jax.sharding.Mesh, *local_parts: np.ndarray, global_batch: int | None = None):
    """Batch-leading arrays on the mesh, split along its first axis. Each process passes the rows of
    its `process_slice`; with one process these are the whole batch."""
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    out = []
    for part in local_parts:
        part = np.asarray(part)
        if jax.process_count() == 1:
            out.append(jax.device_put(part, sharding))
            continue
        shape = (global_batch or part.shape[0] * jax.process_count(), *part.shape[1:])
        out.append(jax.make_array_from_process_local_data(sharding, part, shape))
    return tuple(out)


def replicate(mesh: jax.sharding.Mesh, tree):
    """A pytree copied to every device of the mesh (host values must agree across processes)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _replicated(np.asarray(x) if not isinstance(x, jax.Array) else x, sharding), tree)


def _replicated(x, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and x.is_fully_addressable is False:
        return jax.jit(lambda a: a, out_shardings=sharding)(x)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def gather(x: jax.Array) -> np.ndarray:
    """A (possibly process-spanning) array as one numpy array on every process."""
    if jax.process_count() == 1 or x.is_fully_addressable:
        return np.asarray(x)
    mesh = x.sharding.mesh
    return np.asarray(jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, PartitionSpec()))(x))


def split_evenly(n: int, parts: int, index: int) -> slice:
    """The index-th of ``parts`` contiguous, near-equal ranges of range(n)."""
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return slice(int(bounds[index]), int(bounds[index + 1]))
