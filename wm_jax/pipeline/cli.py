"""`wm-jax demo` and `wm-jax interpret` argument parsing."""

from __future__ import annotations

import json
import logging

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    p = sub.add_parser("demo", help="simulate -> prepare -> train -> embed -> gwas -> report -> interpret, resumable")
    p.add_argument("--out", default="demo_run", help="run directory (manifest.json, summary.json, every stage's files)")
    p.add_argument("--config", default="pipeline_demo", help="configs/<name>.py or a file; fields via --config.KEY=VALUE")
    p.set_defaults(run=run_demo, accepts_overrides=True)

    p = sub.add_parser("interpret", help="PerDI: which white matter each UDIP moves (maps, montages, tract enrichment)")
    p.add_argument("--workdir", required=True, help="training workdir with checkpoints")
    p.add_argument("--udip", required=True, help="UDIP table from `wm-jax embed`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--store", help="volume store (default: the one named in the UDIP table's manifest)")
    p.add_argument("--atlas", help="tract atlas NIfTI (default: atlas.nii.gz beside the store's subjects table)")
    p.add_argument("--labels", help="atlas labels TSV: label tract (default: atlas_labels.tsv beside it)")
    p.add_argument("--step", default="best", help="checkpoint step, 'latest' or 'best'")
    p.add_argument("--n-subjects", type=int, default=200, help="subjects whose codes are perturbed")
    p.add_argument("--fwhm", type=float, default=3.0, help="Gaussian smoothing FWHM in mm")
    p.add_argument("--top-fraction", type=float, default=0.01, help="share of mask voxels tested for enrichment")
    p.add_argument("--permutations", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_interpret, accepts_overrides=False)


def run_demo(args, overrides) -> None:
    from wm_jax.config import apply_overrides, load_config
    from wm_jax.pipeline.run import demo, print_summary

    config = apply_overrides(load_config(args.config), overrides)
    summary = demo(config, args.out)
    print(print_summary(summary))


def run_interpret(args, overrides) -> None:
    from wm_jax.interpret import PerdiOptions, interpret

    options = PerdiOptions(n_subjects=args.n_subjects, fwhm_mm=args.fwhm, top_fraction=args.top_fraction,
                           n_permutations=args.permutations, seed=args.seed)
    summary = interpret(args.workdir, args.udip, args.out, store=args.store, atlas=args.atlas, labels=args.labels,
                        step=args.step, options=options)
    log.info("top tract per UDIP: %s", json.dumps({k: v["tract"] for k, v in summary["top_tract"].items()}))
