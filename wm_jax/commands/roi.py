"""`wm-jax roi`: ROI-FA phenotypes, mean normalised FA per atlas tract or per planted region (`wm_jax.roi`)."""

from __future__ import annotations

import logging

from wm_jax.commands.flags import add_overwrite_flag

log = logging.getLogger("wm_jax")


def register(sub) -> None:
    p = sub.add_parser("roi", help="ROI-FA phenotypes: mean normalised FA per atlas tract (or per planted region)")
    p.add_argument("--store", required=True, help="volume store from `wm-jax prepare`")
    p.add_argument("--atlas", required=True, help="label image on the FA maps' grid")
    p.add_argument("--labels", help="table label tract (required without --truth)")
    p.add_argument("--truth", help="a simulated cohort's truth.tsv: one region per planted effect instead")
    p.add_argument("--out", required=True, help="phenotype table FID IID ... (+ OUT.manifest.json)")
    add_overwrite_flag(p)
    p.set_defaults(run=run, accepts_overrides=False)


def run(args, overrides) -> None:
    import json
    from pathlib import Path

    from wm_jax.data.store import VolumeStore
    from wm_jax.errors import InputError, require_file
    from wm_jax.publish import atomic_path, check_output_files, check_output_name
    from wm_jax.roi import oracle_phenotypes, tract_means

    if args.truth is None and args.labels is None:
        raise InputError("--labels: expected an atlas labels table (label tract), or --truth")
    check_output_name(args.out, "file")
    manifest = Path(f"{args.out}.manifest.json")
    check_output_files([args.out, manifest], manifest, "roi", args.overwrite)
    store = VolumeStore.open(args.store)
    if args.truth:
        require_file(args.truth, "truth table")
        try:
            frame = oracle_phenotypes(store, args.truth)
        except (KeyError, AttributeError, ValueError, UnicodeDecodeError) as err:
            raise InputError(f"{args.truth}: expected a simulated cohort's truth.tsv ({type(err).__name__}: {err})")
    else:
        frame = tract_means(store, args.atlas, args.labels)
    with atomic_path(args.out) as tmp, atomic_path(manifest) as tmp_manifest:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        record = {
            "command": "roi",
            "store": str(Path(args.store).resolve()),
            "atlas": str(Path(args.atlas).resolve()),
            "labels": args.labels and str(Path(args.labels).resolve()),
            "truth": args.truth and str(Path(args.truth).resolve()),
            "n_subjects": len(frame),
        }
        tmp_manifest.write_text(json.dumps(record, indent=2))
    log.info("roi: %d subjects x %d regions -> %s", len(frame), frame.shape[1] - 2, args.out)
