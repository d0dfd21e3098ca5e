"""`wm-jax simulate`: a synthetic imaging-genetics cohort (`wm_jax.simulate.cohort`)."""

from __future__ import annotations

from wm_jax.commands.flags import add_overwrite_flag


def register(sub) -> None:
    from wm_jax import options as o
    from wm_jax.stage_options import SEED, SIM_SUBJECTS

    p = sub.add_parser("simulate", help="write a synthetic imaging-genetics cohort")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--preset", help="tiny, demo or paper: a preset of configs/sim.py (without one, its default)")
    p.add_argument(
        "--config", help="a config file, FILE or FILE:PRESET (overrides --preset); fields via --config.KEY=VALUE"
    )
    p.add_argument("--n-subjects", type=o.range_type(SIM_SUBJECTS), help="subjects to simulate, >= 10")
    p.add_argument("--seed", type=o.range_type(SEED))
    add_overwrite_flag(p)
    p.set_defaults(run=run, accepts_overrides=True)


def run(args, overrides) -> None:
    from wm_jax.config import SIM_RULES, apply_overrides, load_config, validate_config
    from wm_jax.publish import check_output_dir
    from wm_jax.simulate.cohort import COHORT, simulate_cohort

    spec = args.config or (f"sim:{args.preset}" if args.preset else "sim")  # configs/sim.py has the default preset
    config = apply_overrides(load_config(spec), overrides)
    if args.n_subjects is not None:
        config.n_subjects = args.n_subjects
    if args.seed is not None:
        config.seed = args.seed
    validate_config(config, SIM_RULES)
    check_output_dir(args.out, COHORT, args.overwrite)
    simulate_cohort(config, args.out, overwrite=args.overwrite)
