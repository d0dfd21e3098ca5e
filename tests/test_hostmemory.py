"""The host allocator keeps freed blocks (wm_jax.hostmemory): a large block freed and allocated
again is served from memory the process already has, not from fresh pages."""

import os
import subprocess
import sys
import textwrap

import pytest

# The probe turns transparent huge pages off for itself (prctl PR_SET_THP_DISABLE), so a fresh
# block faults once per base page (4-64 KiB on Linux: 768 or more faults for 48 MiB) on any
# machine; with huge pages of 512 MiB (arm64 with 64 KiB pages) it would fault once or not at all.
PROBE = textwrap.dedent(
    """
    import ctypes, resource, sys
    import numpy as np
    from wm_jax.hostmemory import keep_freed_memory
    ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
    if sys.argv[1] == "keep":
        assert keep_freed_memory(), "glibc refused the thresholds"
    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = np.ones(48 << 20, np.uint8)  # 48 MiB: above glibc's largest mmap threshold
        del block
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(min(faults[1:]))
    """
)


def _faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused():
    # glibc's defaults: every allocation maps fresh pages, one fault per page touched (12,288 with
    # 4 KiB pages, 768 with 64 KiB pages; the bound below holds for huge pages of 2 MiB as well).
    default = _faults("default")
    assert default >= (48 << 20) // (2 << 20)
    # Kept: the second and later allocations reuse the freed block.
    assert _faults("keep") < default // 10


def test_a_bad_setting_is_one_line_naming_it(tmp_path):
    """WM_JAX_MALLOC_KEEP_MIB that is not a whole number: `wm-jax gwas` stops with one line naming
    the variable, exit 2, before it writes anything."""
    env = {"WM_JAX_MALLOC_KEEP_MIB": "lots"}
    command = [sys.executable, "-m", "wm_jax.cli", "gwas", "--bfile", str(tmp_path / "g"), "--pheno", "p"]
    command += ["--covar", "c", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "WM_JAX_MALLOC_KEEP_MIB='lots'" in lines[0] and "whole number" in lines[0]
    assert list(tmp_path.iterdir()) == []
