"""One 3D convolution (k3, SAME) forward + backward on this CPU, written several ways, side by side
with PyTorch's Conv3d, to find the formulation XLA:CPU runs fastest. All forms compute the same
mathematics (checked against lax.conv here before timing).

    python benchmarks/conv_formulations.py [--shape 48,56,48] [--batch 4] [--pairs 1:8,8:8,8:16,16:16] [--reps 3]

Writes benchmarks/results/conv_formulations.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def timed(fn, *args, reps):
    out = fn(*args)
    _block(out)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        _block(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def _block(tree):
    import jax

    for leaf in jax.tree_util.tree_leaves(tree):
        leaf.block_until_ready()


def jax_forms():
    import jax.numpy as jnp
    from jax import lax

    from wm_jax.model.conv import conv3d_k3_library, conv3d_k3_planes, conv3d_k3_shifted

    def im2col27(x, w):
        b, sx, sy, sz, c = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
        cols = jnp.concatenate(
            [xp[:, i : i + sx, j : j + sy, k : k + sz] for i in range(3) for j in range(3) for k in range(3)], -1
        )
        return jnp.einsum("bxyzk,ko->bxyzo", cols, w.reshape(27 * c, -1))

    def lax_conv_ncdhw(x, w):
        y = lax.conv_general_dilated(
            jnp.moveaxis(x, -1, 1), w, (1, 1, 1), "SAME", dimension_numbers=("NCDHW", "DHWIO", "NCDHW")
        )
        return jnp.moveaxis(y, 1, -1)

    return {
        "lax.conv NDHWC": conv3d_k3_library,
        "lax.conv NCDHW": lax_conv_ncdhw,
        "im2col 27 + einsum": im2col27,
        "27 shifted einsums (CPU, 1 input channel)": conv3d_k3_shifted,
        "2D conv over planes, X-neighbours stacked (CPU)": conv3d_k3_planes,
    }


def run(shape, batch, pairs, reps):
    import jax
    import jax.numpy as jnp

    rows = []
    forms = jax_forms()
    rng = np.random.default_rng(0)
    for cin, cout in pairs:
        x = jnp.asarray(rng.standard_normal((batch, *shape, cin)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, 3, cin, cout)) / np.sqrt(27 * cin), jnp.float32)
        reference = forms["lax.conv NDHWC"](x, w)
        row = {"cin": cin, "cout": cout}
        for name, form in forms.items():
            np.testing.assert_allclose(np.asarray(form(x, w)), np.asarray(reference), atol=2e-4, rtol=1e-4)
            step = jax.jit(jax.value_and_grad(lambda x, w, f=form: (f(x, w) ** 2).sum(), argnums=(0, 1)))
            row[name] = timed(step, x, w, reps=reps)
        row["torch Conv3d"] = torch_seconds(shape, batch, cin, cout, reps)
        rows.append(row)
        print(row, flush=True)
    return rows


def torch_seconds(shape, batch, cin, cout, reps):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(cin, cout, 3, padding=1)
    x = torch.randn(batch, cin, *shape, requires_grad=True)

    def step():
        conv.zero_grad()
        x.grad = None
        (conv(x) ** 2).sum().backward()

    step()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="48,56,48")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pairs", default="1:8,8:8,8:16,16:16,32:32,64:64")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    pairs = [tuple(int(v) for v in p.split(":")) for p in args.pairs.split(",")]
    # Deeper levels run at half the size per level, as in the model.
    rows = run(shape, args.batch, pairs, args.reps)
    names = [k for k in rows[0] if k not in ("cin", "cout")]
    out = REPO / "benchmarks" / "results" / "conv_formulations"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = (
        "python benchmarks/conv_formulations.py "
        + f"--shape {args.shape} --batch {args.batch} --pairs {args.pairs} --reps {args.reps}"
    )
    lines = [
        "# Conv3d k3 SAME, forward + backward (seconds, best of reps)",
        "",
        f"`{command}` on {platform.machine()}, 2 cores, {time.strftime('%Y-%m-%d')}.",
        "",
        "| cin:cout | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for row in rows:
        lines.append(
            f"| {row['cin']}:{row['cout']} | "
            + " | ".join("-" if row[n] is None else f"{row[n]:.4f}" for n in names)
            + " |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
