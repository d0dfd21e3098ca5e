"""Keep the host allocator from handing large blocks back to the kernel between device steps.

XLA:CPU allocates each executable's temporaries (tens of MiB for a GWAS step, more for a training
step) when the step starts and frees them when it ends. glibc serves blocks above its mmap
threshold (at most 32 MiB) with a fresh mmap and returns them with munmap, and trims the top of
its heap once more than 128 KiB there is free. Either way every step touches its temporaries as
new pages: a page fault and a zeroed page per 4 KiB. For the GWAS kernel at 512 variants and room
for 64 missing calls that was about 9,070 faults per step and a quarter to a third of the step's
time on this machine (`benchmarks/results/host_allocator.md`).

`keep_freed_memory()` raises both thresholds (to WM_JAX_MALLOC_KEEP_MIB, 1024 MiB by default), so
freed temporaries stay in the process and the next step reuses them. The cost: the process keeps
its peak heap until it exits. It is a no-op off glibc (macOS, musl) and on accelerators' device
memory, which has its own allocator. `wm-jax gwas` calls it before its first step; library users
may call it themselves. WM_JAX_MALLOC_KEEP_MIB=0 leaves glibc's defaults. Training does not call
it: its step was no faster so (0.87-1.01x, `benchmarks/results/host_allocator_train.md`), perhaps
because freshly mapped blocks get transparent huge pages and heap blocks need not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

from wm_jax.errors import InputError

log = logging.getLogger("wm_jax")

ENV_KEEP_MIB = "WM_JAX_MALLOC_KEEP_MIB"
DEFAULT_KEEP_MIB = 1024
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mib: int | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds to ``mib`` MiB (default: $WM_JAX_MALLOC_KEEP_MIB or
    1024; anything but a whole number there is an InputError). Returns whether glibc took them."""
    if mib is None:
        text = os.environ.get(ENV_KEEP_MIB, str(DEFAULT_KEEP_MIB))
        if not text.strip().isdigit():
            raise InputError(f"{ENV_KEEP_MIB}={text!r}: expected a whole number of MiB (0 keeps glibc's defaults)")
        mib = int(text)
    if mib <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc
    value = ctypes.c_int(min(mib, 2047) << 20)
    taken = bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
    log.debug("host allocator keeps freed blocks up to %d MiB: %s", mib, taken)
    return taken
