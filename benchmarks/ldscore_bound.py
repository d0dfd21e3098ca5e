"""The least time any exact LD-score computation can take on this machine, against a target.

    python benchmarks/ldscore_bound.py --bim COHORT/genotypes.bim --n 5003 --ld-wind-kb 1000 \
        --ldsc-seconds 254.8 --target 20

LD scores need r_jk for every pair in a window: with each pair computed once, 2 N FLOPs a pair
(a dot over N samples), whatever the blocking. This counts the pairs of the .bim's windows (each
variant with itself and the variants within the window to its left, per chromosome; LDSC's chunk
rounding only adds pairs), and times on this machine the products those pairs are made of, a
(512 x N) by (N x 4,096) matrix product, in float32 at full precision, int8 with int32 sums (exact
for hard calls) and bf16 with float32 sums, through XLA as wm-jax runs them, and float32 through
NumPy's BLAS. The bound is the pairs' FLOPs at the fastest of these rates: no exact method that
computes the products can beat it (start-up, reading and decoding come on top).
Writes benchmarks/results/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import record  # noqa: E402


def window_pairs(bim: Path, window_bp: int) -> int:
    """Pairs (j, k), k <= j, with k within ``window_bp`` to the left of j on j's chromosome."""
    table = pd.read_csv(bim, sep=r"\s+", header=None, usecols=[0, 3], names=["chrom", "pos"], dtype={"chrom": str})
    total = 0
    for _, group in table.groupby("chrom", sort=False):
        pos = np.sort(group.pos.to_numpy())
        total += int((np.arange(len(pos)) - np.searchsorted(pos, pos - window_bp) + 1).sum())
    return total


def best_rate(fn, a, b, flops: float, repeats: int) -> float:
    """The best FLOP/s of ``fn(a, b)`` over ``repeats`` timed calls after one warm-up."""
    fn(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(a, b)
        best = min(best, time.perf_counter() - start)
    return flops / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bim", required=True)
    parser.add_argument("--n", type=int, required=True, help="samples")
    parser.add_argument("--ld-wind-kb", type=float, default=1000)
    parser.add_argument("--ldsc-seconds", type=float, required=True, help="ldsc --l2 whole process, measured")
    parser.add_argument("--target", type=float, default=20, help="the speed-up asked for")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default="ldscore_bound")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    pairs = window_pairs(Path(args.bim), int(args.ld_wind_kb * 1000))
    pair_flops = 2.0 * args.n * pairs
    rng = np.random.default_rng(0)
    calls = rng.integers(0, 3, (512 + 4096, args.n)).astype(np.int8)
    left, right = calls[:512], calls[512:].T.copy()
    flops = 2.0 * 512 * args.n * 4096
    highest = jax.lax.Precision.HIGHEST
    f32 = jax.jit(lambda a, b: jnp.dot(a, b, precision=highest))
    i8 = jax.jit(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.int32))
    bf16 = jax.jit(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32))
    a32, b32 = jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32)
    a16, b16 = jnp.asarray(left, jnp.bfloat16), jnp.asarray(right, jnp.bfloat16)
    a8, b8 = jnp.asarray(left), jnp.asarray(right)
    rates = {
        "xla_float32": best_rate(lambda a, b: f32(a, b).block_until_ready(), a32, b32, flops, args.repeats),
        "xla_int8_int32_sums": best_rate(lambda a, b: i8(a, b).block_until_ready(), a8, b8, flops, args.repeats),
        "xla_bf16_float32_sums": best_rate(lambda a, b: bf16(a, b).block_until_ready(), a16, b16, flops, args.repeats),
        "numpy_blas_float32": best_rate(
            np.matmul, left.astype(np.float32), right.astype(np.float32), flops, args.repeats
        ),
    }
    fastest = max(rates, key=rates.get)
    bound = pair_flops / rates[fastest]
    budget = args.ldsc_seconds / args.target
    row = {
        "variants_bim": sum(1 for _ in open(args.bim)),
        "n": args.n,
        "window_kb": args.ld_wind_kb,
        "pairs": pairs,
        "pair_tflop": round(pair_flops / 1e12, 3),
        **{f"{k}_gflops": round(v / 1e9, 1) for k, v in rates.items()},
        "fastest": fastest,
        "least_seconds": round(bound, 1),
        "ldsc_seconds": args.ldsc_seconds,
        "target": args.target,
        "budget_seconds": round(budget, 2),
        "target_reachable": bool(bound < budget),
    }
    print(row, flush=True)
    record.write(
        args.name,
        "The least time an exact LD-score computation can take here",
        "python benchmarks/ldscore_bound.py " + " ".join(sys.argv[1:]),
        [row],
        "Pairs of the .bim's windows (each computed once, 2 N FLOPs a pair) at the fastest rate this machine "
        "gave for their products, a (512 x N) by (N x 4,096) matrix product, best of the repeats; budget: "
        "ldsc's measured whole process over the target speed-up.",
    )


if __name__ == "__main__":
    main()
