"""Why the demo's encoder has a linear path: held-out reconstruction of encoders against PCA.

On a demo run's stores (`wm-jax demo --out DIR` makes DIR/store_train and DIR/store_heldout),
side by side in one process, the masked MSE on held-out subjects after each epoch of:
- `linear`: a linear autoencoder (flatten -> 32 -> voxels) from random initialisation, Adam;
- `conv`: the demo's convolutional autoencoder (the paper's architecture at 8-16-32 channels);
- `conv+pca`: the same with the linear path started from PCA (`model.linear_path=True`), the
  linear path learning at `--linear-lr-scale` of the rate;
against predicting the training mean image and PCA with as many components (fit on the training
store). Inputs are the stores' z-scored volumes, as in training; Adam with a cosine schedule,
batch 16, as `configs/pipeline_demo.py`.

    python benchmarks/encoder_vs_pca.py --run /tmp/demo2 --epochs 2 --linear-epochs 40

Writes benchmarks/results/NAME.{md,json} (NAME = --name, encoder_vs_pca).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from wm_jax.data.store import VolumeStore
from wm_jax.model.autoencoder import Autoencoder, AutoencoderConfig, masked_mse
from wm_jax.pca import fit_pca
from wm_jax.train.state import transform as train_transform

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parent))

import record  # noqa: E402


class LinearAutoencoder(nnx.Module):
    def __init__(self, shape, latent: int, rngs: nnx.Rngs):
        voxels = int(np.prod(shape))
        self.encoder = nnx.Linear(voxels, latent, rngs=rngs)
        self.decoder = nnx.Linear(latent, voxels, rngs=rngs)

    def __call__(self, x):
        return self.decoder(self.encoder(x.reshape(len(x), -1))).reshape(x.shape)


def heldout_mse(predict, volumes: np.ndarray, mask: np.ndarray, chunk: int = 64) -> float:
    total = 0.0
    for start in range(0, len(volumes), chunk):
        x = volumes[start : start + chunk]
        total += float((((np.asarray(predict(x)) - x) ** 2) * mask).sum())
    return total / (len(volumes) * mask.sum())


def train(model, transform, train_volumes, mask_train, heldout, mask_heldout, epochs: int, seed: int = 0) -> list[dict]:
    optimizer = nnx.Optimizer(model, transform, wrt=nnx.Param)
    mask_d = jnp.asarray(mask_train, jnp.float32)

    @nnx.jit
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: masked_mse(m(x), x, mask_d))(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def forward(model, x):
        return model(x)

    rng, rows, start = np.random.default_rng(seed), [], time.time()
    for epoch in range(epochs):
        order = rng.permutation(len(train_volumes))
        for i in range(0, len(order) - 15, 16):
            loss = step(model, optimizer, jnp.asarray(train_volumes[np.sort(order[i : i + 16])]))
        model.eval()
        mse = heldout_mse(lambda x: forward(model, jnp.asarray(x)), heldout, mask_heldout)
        model.train()
        rows.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(loss),
                "heldout_mse": mse,
                "seconds": round(time.time() - start, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def schedule(rate: float, epochs: int, n: int):
    return optax.cosine_decay_schedule(rate, max(1, epochs * (n // 16)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a demo run directory (store_train, store_heldout)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--linear-epochs", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--linear-lr-scale", type=float, default=0.03)
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="--config.weight_decay of wm-jax train: AdamW's decay of the convolutional kernels (0: Adam)",
    )
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--heldout", type=int, default=400, help="held-out subjects evaluated")
    parser.add_argument("--name", default="encoder_vs_pca", help="results file name in benchmarks/results/")
    parser.add_argument(
        "--models", default="linear,conv,conv+pca", help="encoders to train, comma-separated (default: all three)"
    )
    args = parser.parse_args(argv)
    models = set(args.models.split(","))
    if not models <= {"linear", "conv", "conv+pca"}:
        parser.error(f"--models: expected a comma-separated subset of linear,conv,conv+pca, got {args.models!r}")
    train_store, heldout_store = (
        VolumeStore.open(Path(args.run) / "store_train"),
        VolumeStore.open(Path(args.run) / "store_heldout"),
    )
    x_train = np.asarray(train_store.volumes, np.float32)
    x_heldout = np.asarray(heldout_store.volumes[: args.heldout], np.float32)
    mask_train, mask_heldout = np.asarray(train_store.mask), np.asarray(heldout_store.mask)
    pca, pca2 = fit_pca(train_store, args.latent), fit_pca(train_store, 2 * args.latent)
    results = {
        "mean image": heldout_mse(lambda x: np.broadcast_to(x_train.mean(axis=0), x.shape), x_heldout, mask_heldout),
        f"PCA-{args.latent}": heldout_mse(lambda x: pca.reconstruct(pca.scores(x)), x_heldout, mask_heldout),
        f"PCA-{2 * args.latent}": heldout_mse(lambda x: pca2.reconstruct(pca2.scores(x)), x_heldout, mask_heldout),
    }
    print(json.dumps(results), flush=True)
    curves, shape = {}, x_train.shape[1:]

    def train_optimizer(linear_path: bool):
        """The optimizer `wm-jax train` builds (wm_jax/train/state.py) for these settings."""
        settings = {"schedule": "cosine", "learning_rate": args.learning_rate, "epochs": args.epochs}
        settings |= {"weight_decay": args.weight_decay, "linear_path_lr_scale": args.linear_lr_scale}
        settings |= {"model": {"linear_path": linear_path}}
        return train_transform(ml_collections.ConfigDict(settings), len(x_train) // 16)

    data = (x_train, mask_train, x_heldout, mask_heldout)
    if "linear" in models:
        transform = optax.adam(schedule(args.learning_rate, args.linear_epochs, len(x_train)))
        linear = LinearAutoencoder(shape, args.latent, nnx.Rngs(0))
        curves["linear"] = train(linear, transform, *data, args.linear_epochs)
    if "conv" in models:
        config = AutoencoderConfig(input_shape=shape, channels=(8, 16, 32), latent_dim=args.latent)
        transform = train_optimizer(linear_path=False)
        curves["conv"] = train(Autoencoder(config, rngs=nnx.Rngs(0)), transform, *data, args.epochs)
    if "conv+pca" in models:
        model = Autoencoder(
            AutoencoderConfig(input_shape=shape, channels=(8, 16, 32), latent_dim=args.latent, linear_path=True),
            rngs=nnx.Rngs(0),
        )
        offset = pca.reconstruct(np.zeros((1, args.latent), np.float32))[0]
        model.init_linear_path(offset, pca.reconstruct(np.eye(args.latent, dtype=np.float32)) - offset)
        transform = train_optimizer(linear_path=True)
        curves["conv+pca"] = train(model, transform, *data, args.epochs)
    write(args, results, curves, " ".join(sys.argv[1:] if argv is None else argv))


def write(args, results: dict, curves: dict, command_args: str) -> None:
    lines = [
        "# Held-out reconstruction: encoders against PCA",
        "",
        f"`python benchmarks/encoder_vs_pca.py {command_args}` on {record.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Masked MSE of the z-scored volumes on {args.heldout} held-out subjects (lower is better).",
        "",
        "| model | epochs | held-out MSE | / PCA | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    reference = results[f"PCA-{args.latent}"]
    for name, value in results.items():
        lines.append(f"| {name} | - | {value:.5f} | {value / reference:.3f} | - |")
    for name, rows in curves.items():
        shown = rows if len(rows) <= 4 else [rows[0], rows[len(rows) // 4 - 1], rows[len(rows) // 2 - 1], rows[-1]]
        for row in shown:
            relative = row["heldout_mse"] / reference
            lines.append(f"| {name} | {row['epoch']} | {row['heldout_mse']:.5f} | {relative:.3f} | {row['seconds']} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"baselines": results, "curves": curves}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
