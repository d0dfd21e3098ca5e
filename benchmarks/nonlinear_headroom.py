"""How much can any nonlinear code beat PCA on a cohort's held-out volumes? A cheap upper-bound probe
for issue 22's "encoder at most 0.97 x PCA" before spending training time on convolutions.

For each case (a training store and a held-out store), side by side in one process:
- PCA with L components (L = the latent size, 32 as in the demo) and with K components, fit on the
  training store;
- a nonlinear autoencoder on the K PCA coordinates with an L-dimensional code: code = A c + f(c),
  reconstruction = B code + g(code), f and g one-hidden-layer GELU MLPs, A and B started as PCA-L
  and f, g's last layers at zero (so it starts exactly at PCA-L). Adam, batch 64, the loss is the
  masked voxel MSE (the coordinates weighted by their variance). The epoch is chosen on a
  validation split of the training store (15%), never on the held-out store.

If this probe cannot beat PCA-L on held-out data, the volumes hold no nonlinear structure that a
code of that size can learn from that many subjects, and no encoder will. MSE beyond the K
components is counted for both models.

    python benchmarks/nonlinear_headroom.py --case NAME=TRAIN_STORE,HELDOUT_STORE [--case ...]
        [--latent 32] [--components 64] [--hidden 64] [--epochs 200] [--name nonlinear_headroom]

Writes benchmarks/results/NAME.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wm_jax.data.store import VolumeStore

RESULTS = Path(__file__).resolve().parent / "results"


def masked_rows(store_path: str, mask: np.ndarray) -> np.ndarray:
    store = VolumeStore.open(store_path)
    return np.asarray(store.volumes[:])[:, mask].astype(np.float64)


def probe(train: np.ndarray, heldout: np.ndarray, latent: int, components: int, hidden: int, epochs: int, seed: int):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_val = max(1, int(0.15 * len(train)))
    fit, val = train[order[n_val:]], train[order[:n_val]]
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    basis = vt[:components]

    def pca_mse(x, k):
        c = (x - mean) @ basis[:k].T
        return float((((x - mean) - c @ basis[:k]) ** 2).mean())

    coords = {name: (x - mean) @ basis.T for name, x in (("fit", fit), ("val", val), ("heldout", heldout))}
    beyond = {name: pca_mse(x, components) for name, x in (("val", val), ("heldout", heldout))}
    scale = coords["fit"].std(axis=0)
    weight = jnp.asarray(scale**2 / train.shape[1], jnp.float32)  # coordinate error -> voxel MSE
    data = {name: jnp.asarray(c / scale, jnp.float32) for name, c in coords.items()}

    keys = jax.random.split(jax.random.PRNGKey(seed), 2)

    def dense(key, a, b):
        return jax.random.normal(key, (a, b)) / np.sqrt(a)

    params = {
        "A": jnp.eye(components, latent),
        "B": jnp.eye(latent, components),
        "f1": dense(keys[0], components, hidden),
        "f2": jnp.zeros((hidden, latent)),
        "g1": dense(keys[1], latent, hidden),
        "g2": jnp.zeros((hidden, components)),
        "fb": jnp.zeros(hidden),
        "gb": jnp.zeros(hidden),
    }

    def reconstruct(p, c):
        code = c @ p["A"] + jax.nn.gelu(c @ p["f1"] + p["fb"]) @ p["f2"]
        return code @ p["B"] + jax.nn.gelu(code @ p["g1"] + p["gb"]) @ p["g2"]

    def loss(p, c):
        return (((reconstruct(p, c) - c) ** 2) * weight).sum(axis=1).mean()

    optimizer = optax.adam(1e-3)
    state = optimizer.init(params)

    @jax.jit
    def step(p, s, batch):
        value, grads = jax.value_and_grad(loss)(p, batch)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    best = (float(loss(params, data["val"])), 0, float(loss(params, data["heldout"])))
    began = time.perf_counter()
    for epoch in range(1, epochs + 1):
        shuffled = rng.permutation(len(fit))
        for start in range(0, len(fit), 64):
            params, state = step(params, state, data["fit"][shuffled[start : start + 64]])
        val_loss = float(loss(params, data["val"]))
        if val_loss < best[0]:
            best = (val_loss, epoch, float(loss(params, data["heldout"])))
    pca_l = pca_mse(heldout, latent)
    mlp = best[2] + beyond["heldout"]
    return {
        "n_train": len(fit),
        "n_validation": len(val),
        "n_heldout": len(heldout),
        "voxels": int(train.shape[1]),
        "pca_latent_heldout": pca_l,
        "pca_components_heldout": beyond["heldout"],
        "nonlinear_heldout": mlp,
        "nonlinear_over_pca": mlp / pca_l,
        "chosen_epoch": best[1],
        "seconds": round(time.perf_counter() - began, 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, help="NAME=TRAIN_STORE,HELDOUT_STORE")
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="nonlinear_headroom")
    args = parser.parse_args(argv)
    rows = []
    for case in args.case:
        name, stores = case.split("=", 1)
        train_store, heldout_store = stores.split(",")
        mask = np.load(Path(train_store) / "mask.npy").astype(bool)
        result = probe(
            masked_rows(train_store, mask),
            masked_rows(heldout_store, mask),
            args.latent,
            args.components,
            args.hidden,
            args.epochs,
            args.seed,
        )
        rows.append({"case": name, "train_store": train_store, "heldout_store": heldout_store, **result})
        print(json.dumps(rows[-1]), flush=True)
    command = "python benchmarks/nonlinear_headroom.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    lines = [
        "# Nonlinear headroom over PCA on held-out volumes",
        "",
        f"`{command}` on {os.uname().machine}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Masked voxel MSE of z-scored held-out volumes. PCA-{args.latent} and PCA-{args.components} are fit "
        f"on the training store less its validation split; `nonlinear` is a {args.latent}-d code on the "
        f"{args.components} PCA coordinates (module docstring), at the epoch of best validation loss.",
        "",
        f"| case | train | held-out | PCA-{args.latent} | PCA-{args.components} | nonlinear "
        f"| nonlinear / PCA-{args.latent} | epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['n_train']} | {r['n_heldout']} | {r['pca_latent_heldout']:.5f} | "
            f"{r['pca_components_heldout']:.5f} | {r['nonlinear_heldout']:.5f} | {r['nonlinear_over_pca']:.3f} | "
            f"{r['chosen_epoch']} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
