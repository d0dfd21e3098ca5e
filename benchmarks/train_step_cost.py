"""Where the paper-size training step's memory traffic goes, float32 against bfloat16 compute, from the
compiled step alone (no device needed): XLA's cost analysis (FLOPs, bytes accessed), its memory
analysis (temporaries), and the optimized HLO read op by op, each top-level op's bytes (operands +
result) put in one class: convolution, dot (linear layers, transposed-conv einsums), convert (fusions
that only change dtype or layout), reduction (BatchNorm statistics, the loss), elementwise, copy.

    python benchmarks/train_step_cost.py [--shape 182,218,182] [--batch 1] [--dtypes float32,bfloat16]
        [--formulation library] [--name train_step_cost]

The step is the one `benchmarks/pod_plan.py` plans with (Adam, masked MSE, the library convolution
that "auto" picks on GPU and TPU). It is compiled for this machine's backend (XLA:CPU here): XLA:GPU
fuses differently, so the figures say what the program asks of memory, not what an H200 does with
it. Writes benchmarks/results/NAME.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

BYTES = {"f64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}
SHAPE = re.compile(r"\b(f64|f32|s32|u32|bf16|f16|s16|u16|s8|u8|pred)\[([0-9,]*)\]")
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$")
FREE = {"parameter", "constant", "bitcast", "tuple", "get-tuple-element", "after-all", "partition-id"}
CLASSES = ("convolution", "dot", "convert", "reduction", "elementwise", "copy")


def shapes(text: str) -> list[tuple[str, int]]:
    """(dtype, elements) of every array shape in ``text``."""
    out = []
    for dtype, dims in SHAPE.findall(text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        out.append((dtype, n))
    return out


def computations(hlo: str) -> dict[str, list[str]]:
    """Each computation's name and its instruction lines."""
    comps, name = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header and not line.startswith(" "):
            name = "ENTRY" if line.startswith("ENTRY") else header.group(1)
            comps[name] = []
        elif name is not None and line.strip() and line.strip() != "}":
            comps[name].append(line)
    return comps


def op_class(op: str, line: str, comps: dict[str, list[str]]) -> str:
    """The class of a top-level op, by what it (or the computation it calls) contains."""
    body = [op]
    for called in re.findall(r"calls=%?([\w.\-]+)", line):
        for inner in comps.get(called, []):
            m = INSTRUCTION.match(inner)
            if m:
                body.append(m.group(3))
    kinds = set(body) - FREE - {"fusion"}
    if {"convolution"} & kinds or "__onednn$convolution" in line or "conv" in op:
        return "convolution"
    if {"dot"} & kinds:
        return "dot"
    if kinds and kinds <= {"convert", "copy", "transpose", "reshape", "broadcast", "slice"} and "convert" in kinds:
        return "convert"
    if {"reduce", "reduce-window", "all-reduce"} & kinds:
        return "reduction"
    if kinds and kinds <= {"copy", "transpose", "reshape", "slice", "concatenate", "pad", "dynamic-slice"}:
        return "copy"
    return "elementwise"


def _entry_ops(hlo: str):
    """(name, result arrays, op, operand names, class) of each ENTRY instruction, and the users of each."""
    comps = computations(hlo)
    ops, users = [], defaultdict(list)
    for line in comps.get("ENTRY", []):
        m = INSTRUCTION.match(line)
        if not m:
            continue
        name, result_type, op, rest = m.groups()
        operands = re.findall(r"%([\w.\-]+)", rest.split("),")[0] if ")," in rest else rest)
        ops.append((name, shapes(result_type), op, operands, op_class(op, line, comps)))
        for o in operands:
            users[o].append(name)
    return ops, users


def traffic(hlo: str, full_resolution: int) -> dict:
    """Bytes read and written by the ENTRY computation's ops, by class and by dtype; the f32 arrays of
    at least ``full_resolution`` elements written (a full-resolution tensor with a channel or more);
    and the converts that feed or drain a convolution. XLA:CPU computes a bf16 convolution in
    float32 with such converts around it (its float normalisation); XLA:GPU runs it in bf16 with
    none, so ``gpu_like_bytes`` takes them out and counts those convolutions' activations at 2 bytes:
    an estimate, not a measurement."""
    ops, users = _entry_ops(hlo)
    by_name = {name: (arrays, op, cls) for name, arrays, op, _, cls in ops}
    by_class, by_dtype = defaultdict(int), defaultdict(int)
    big_f32, converts_big, around_conv, conv_saving = 0, 0, 0, 0
    for name, result, op, operands, cls in ops:
        if op in FREE:
            continue
        arrays = list(result) + [s for o in operands for s in by_name.get(o, ([], "", ""))[0]]
        n_bytes = sum(BYTES[d] * n for d, n in arrays)
        by_class[cls] += n_bytes
        for d, n in arrays:
            by_dtype[d] += BYTES[d] * n
        big_f32 += 4 * sum(n for d, n in result if d == "f32" and n >= full_resolution)
        if cls == "convert":
            converts_big += sum(1 for _, n in result if n >= full_resolution)
            feeds = any(by_name.get(u, ([], "", ""))[2] == "convolution" for u in users[name])
            drains = any(by_name.get(o, ([], "", ""))[2] == "convolution" for o in operands)
            if feeds or drains:
                around_conv += n_bytes
                # the convolution's f32 side of this convert would be bf16 on a bf16-native backend
                conv_saving += sum(2 * n for d, n in (result if feeds else by_name[operands[0]][0]) if d == "f32")
    total = sum(by_class.values())
    return {
        "bytes_by_class": {c: by_class.get(c, 0) for c in CLASSES},
        "bytes_by_dtype": dict(sorted(by_dtype.items())),
        "full_res_f32_written_bytes": big_f32,
        "full_res_converts": converts_big,
        "converts_around_convolutions_bytes": around_conv,
        "gpu_like_bytes": total - around_conv - conv_saving,
        "total_bytes": total,
    }


def analyse(shape, batch: int, dtype: str, formulation: str, keep_hlo: str | None = None) -> dict:
    from pod_plan import compiled_step

    from wm_jax.model.autoencoder import AutoencoderConfig

    start = time.perf_counter()
    config = AutoencoderConfig(input_shape=shape, compute_dtype=dtype, conv_formulation=formulation)
    compiled, _ = compiled_step(config, batch)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    hlo = compiled.as_text()
    full_resolution = batch * shape[0] * shape[1] * shape[2] * config.channels[0]
    row = {
        "dtype": dtype,
        "flops": float(cost.get("flops", 0.0)),
        "cost_bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
        **traffic(hlo, full_resolution),
        "compile_s": round(time.perf_counter() - start, 1),
    }
    if keep_hlo:
        Path(keep_hlo).mkdir(parents=True, exist_ok=True)
        (Path(keep_hlo) / f"step_{dtype}.hlo.txt").write_text(hlo)
    return row


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def write(result: dict, name: str) -> None:
    rows = result["rows"]
    lines = [
        "# Paper-size training step: FLOPs and memory traffic by compute dtype (compiled, not run)",
        "",
        f"`{result['command']}` on {result['machine']} ({result['backend']}), {result['date']}: input "
        f"{result['shape']}, batch {result['batch']}, convolution `{result['formulation']}`. GB = 1e9 bytes. "
        "`cost` columns are XLA's cost analysis; the classes are the optimized HLO's top-level ops, each "
        "op's operands + result.",
        "",
        "| dtype | TFLOP | cost bytes GB | temporaries GB | "
        + " | ".join(f"{c} GB" for c in CLASSES)
        + " | f32 full-res written GB | full-res converts | converts at convolutions GB"
        + " | bf16-native estimate GB |",
        "|" + "---|" * (8 + len(CLASSES)),
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['flops'] / 1e12:.2f} | {_gb(r['cost_bytes_accessed'])} | {_gb(r['temp_bytes'])} | "
            + " | ".join(_gb(r["bytes_by_class"][c]) for c in CLASSES)
            + f" | {_gb(r['full_res_f32_written_bytes'])} | {r['full_res_converts']}"
            + f" | {_gb(r['converts_around_convolutions_bytes'])} | {_gb(r['gpu_like_bytes'])} |"
        )
    (REPO / "benchmarks" / "results" / f"{name}.md").write_text("\n".join(lines) + "\n")
    (REPO / "benchmarks" / "results" / f"{name}.json").write_text(json.dumps(result, indent=2))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="182,218,182")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--formulation", default="library")
    parser.add_argument("--name", default="train_step_cost")
    parser.add_argument("--keep-hlo", default=None, help="a folder to write each dtype's optimized HLO to")
    args = parser.parse_args()
    import jax

    shape = tuple(int(s) for s in args.shape.split(","))
    rows = []
    for dtype in args.dtypes.split(","):
        rows.append(analyse(shape, args.batch, dtype, args.formulation, args.keep_hlo))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": "python benchmarks/train_step_cost.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "backend": jax.default_backend(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "shape": "x".join(map(str, shape)),
        "batch": args.batch,
        "formulation": args.formulation,
        "rows": rows,
    }
    write(result, args.name)


if __name__ == "__main__":
    main()
