"""Speed of the fused Triton kernels vs their PyTorch reference (eager and torch.compile), on a GPU.

For each kernel (``seq_mixer_conv``: everything between in_linear and out_linear of the sequence
mixer; ``monarch_glu``: the block-diagonal GLU MLP) and each length: median forward and
forward+backward milliseconds of the Triton kernel, of the reference in eager mode and of
``torch.compile(reference)``, plus the kernel's achieved memory bandwidth (the bytes it must at
least move, divided by its time) against the device's peak. Writes JSON (stdout and --json),
after every measurement, so a run cut short by a time limit still leaves its results.

    python bench/kernels.py --json bench/results/gpu/kernels.json            # bf16, B=32, H=768
    python bench/kernels.py --lengths 128 512 --no-compile --repeats 10
    python bench/kernels.py --kernels seq_mixer_conv --warps 4 8   # also sweep num_warps

The sequence mixer is measured with its default plan (``triton``) and, where the other
algorithm also applies, with that one too (``triton_tile`` / ``triton_passes``): the data
for choosing the tiles-to-passes threshold (``TILE_MAX_N`` in kernels/seq_mixer_conv.py).

Needs a CUDA GPU: on a CPU it says so and exits (the kernels' CPU tests are ``make test``),
except with ``--compile-for ARCH``, which runs anywhere: every variant above is compiled for
sm_ARCH instead of launched (bench/kernels_aot.py), forward and backward, and each kernel's shared
memory, registers and spills are reported; exit 1 if one does not compile or does not fit.

    python bench/kernels.py --compile-for 90 --json bench/results/compile_sm90.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch

from m2bert import cli_help

# Peak DRAM bandwidth (GB/s) by device name; otherwise a measured device-to-device copy is the peak.
PEAK_GBPS = {
    "H200": 4800, "H100 SXM": 3350, "H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100 NVL": 3900,
    "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100-SXM4-40GB": 1555, "A100-PCIE-40GB": 1555,
    "L40S": 864, "L4": 300, "A10": 600, "RTX 4090": 1008, "RTX 3090": 936,
}


def peak_bandwidth(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device)
    table = next((v for k, v in PEAK_GBPS.items() if k in name), None)
    x = torch.empty(1 << 28, dtype=torch.float32, device=device)  # 1 GiB
    y = torch.empty_like(x)
    ms = time_ms(lambda: y.copy_(x), warmup=3, repeats=10)
    copy_gbps = 2 * x.numel() * 4 / (ms * 1e-3) / 1e9
    return {"device": name, "peak_gbps_spec": table, "copy_gbps_measured": round(copy_gbps, 1),
            "peak_gbps": table if table is not None else round(copy_gbps, 1)}


def time_ms(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():  # the --device cpu smoke run (interpreter): wall clock
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return sorted(times)[len(times) // 2]
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def kernels_aot() -> ModuleType:
    """bench/kernels_aot.py, loaded by its path (bench/ is not a package), however this file is run."""
    name = "bench_kernels_aot"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("kernels_aot.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def seq_mixer_case(batch: int, length: int, h: int, dtype: torch.dtype, device: torch.device):
    from m2bert.model.seq_mixer_conv import seq_mixer_conv_reference as reference

    def p(*shape, scale=1.0):
        return (torch.randn(*shape, device=device) * scale).to(dtype).requires_grad_()

    decay = torch.exp(-torch.arange(length, device=device)[:, None] / (length / 4))
    filt = [(torch.randn(length, h, device=device) * decay / length**0.5).to(dtype).requires_grad_() for _ in range(4)]
    mask = torch.ones(batch, length, 1, device=device, dtype=dtype)
    args = [p(batch, length, 3 * h), p(batch, length, h), mask, p(3 * h, 1, 3, scale=0.5), p(3 * h),
            filt[0], filt[1], p(h), filt[2], filt[3], p(h)]
    el = torch.finfo(dtype).bits // 8
    act = batch * length * h * el
    # Least traffic: fwd reads proj (3) and u (1), writes y (1); bwd also reads dy, writes dproj and du.
    bytes_fwd = 5 * act
    bytes_fwdbwd = bytes_fwd + (3 + 1 + 1 + 3 + 1) * act
    return reference, args, bytes_fwd, bytes_fwdbwd


def seq_mixer_variants(length: int, h: int, warps: list[int] | None) -> dict[str, Callable[..., Any]]:
    """``triton`` (the default plan) and the other algorithm where it applies, per num_warps asked for."""
    from m2bert.kernels.seq_mixer_conv import PASSES_MIN_N, conv_size, plan, seq_mixer_conv_triton

    n = conv_size(length)
    default = plan(length, h).algorithm
    algorithms = [("triton", "auto")]
    if default != "tile" and n <= 2048:  # beyond, a whole-sequence tile spills without end
        algorithms.append(("triton_tile", "tile"))
    if default != "passes" and n >= PASSES_MIN_N:
        algorithms.append(("triton_passes", "passes"))
    out = {}
    for name, algorithm in algorithms:
        for w in warps or [None]:
            def fn(*a, _alg=algorithm, _w=w):
                return seq_mixer_conv_triton(*a, algorithm=_alg, warps=_w)
            out[name if w is None else f"{name}_w{w}"] = fn
    return out


def glu_case(batch: int, length: int, h: int, dtype: torch.dtype, device: torch.device, nblocks: int = 4):
    from m2bert.model.monarch import monarch_glu as reference

    i = 4 * h
    x = torch.randn(batch, length, h, device=device, dtype=dtype).requires_grad_()
    w_in = (torch.randn(nblocks, 2 * i // nblocks, h // nblocks, device=device) / (h // nblocks) ** 0.5).to(dtype)
    w_out = (torch.randn(nblocks, h // nblocks, i // nblocks, device=device) / (i // nblocks) ** 0.5).to(dtype)
    b = torch.randn(h, device=device, dtype=dtype)
    args = [x, w_in.requires_grad_(), w_out.requires_grad_(), b.requires_grad_()]
    el = torch.finfo(dtype).bits // 8
    tokens = batch * length
    weights = (w_in.numel() + w_out.numel()) * el
    bytes_fwd = 2 * tokens * h * el + weights  # read x, write y (inference: nothing saved)
    # Training: fwd also writes act (I) and gate/value (2I); bwd reads dy, x, act, gv, writes dgv, dx, grads.
    bytes_fwdbwd = bytes_fwd + tokens * el * (3 * i + h + h + i + 2 * i + 2 * i + h) + 2 * weights
    return reference, args, bytes_fwd, bytes_fwdbwd


def glu_variants(length: int, h: int, warps: list[int] | None) -> dict[str, Callable[..., Any]]:
    from m2bert.kernels.blockdiag_glu import monarch_glu_triton

    return {"triton": monarch_glu_triton}


def measure(fn, args, warmup: int, repeats: int) -> dict[str, float]:
    grads_of = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    with torch.no_grad():
        fwd = time_ms(lambda: fn(*args), warmup, repeats)
    y = fn(*args)
    dy = torch.randn_like(y)
    del y

    def step():
        out = fn(*args)
        torch.autograd.grad(out, grads_of, dy)

    return {"fwd_ms": round(fwd, 4), "fwdbwd_ms": round(time_ms(step, warmup, repeats), 4)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    torch.manual_seed(0)
    peak = peak_bandwidth(device) if device.type == "cuda" else {"device": "cpu (smoke run)", "peak_gbps": None}
    results: dict[str, Any] = {
        "benchmark": "fused Triton kernels vs PyTorch reference (eager, torch.compile)",
        "batch": args.batch, "hidden": args.hidden, "dtype": args.dtype, "torch": torch.__version__,
        "bandwidth": peak, "kernels": {},
    }
    cases = {"seq_mixer_conv": (seq_mixer_case, seq_mixer_variants), "monarch_glu": (glu_case, glu_variants)}
    for name in args.kernels:
        results["kernels"][name] = {}
    for length in args.lengths:  # lengths outer: a run cut short still has every kernel at the short lengths
        for name in args.kernels:
            row: dict[str, Any] = {}
            results["kernels"][name][str(length)] = row
            case, variants = cases[name]
            try:
                ref_fn, fargs, bytes_fwd, bytes_fwdbwd = case(args.batch, length, args.hidden, dtype, device)
            except torch.cuda.OutOfMemoryError as e:
                row["error"] = f"setup: {e}"[:300]
                continue
            impls = {**variants(length, args.hidden, args.warps), "eager": ref_fn}
            if not args.no_compile:
                impls["compiled"] = torch.compile(ref_fn)
            for impl, fn in impls.items():
                t0 = time.perf_counter()
                try:
                    row[impl] = measure(fn, fargs, args.warmup, args.repeats)
                except Exception as e:  # a failing variant (compile error, OOM, out of resources) is a result too
                    row[impl] = {"error": f"{type(e).__name__}: {e}"[:500]}
                row[impl]["wall_s"] = round(time.perf_counter() - t0, 1)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                emit(results, args.json)
            timed = {k: v for k, v in row.items() if k.startswith("triton") and "fwdbwd_ms" in v}
            if timed:
                row["fastest_triton_variant"] = min(timed, key=lambda k: timed[k]["fwdbwd_ms"])
            tri = row.get("triton", {})
            if "fwd_ms" in tri:
                row["triton_fwd_gbps"] = round(bytes_fwd / (tri["fwd_ms"] * 1e-3) / 1e9, 1)
                row["triton_fwdbwd_gbps"] = round(bytes_fwdbwd / (tri["fwdbwd_ms"] * 1e-3) / 1e9, 1)
                if peak["peak_gbps"]:
                    row["triton_fwd_pct_peak"] = round(100 * row["triton_fwd_gbps"] / peak["peak_gbps"], 1)
                    row["triton_fwdbwd_pct_peak"] = round(100 * row["triton_fwdbwd_gbps"] / peak["peak_gbps"], 1)
                for ref in ("eager", "compiled"):
                    if "fwd_ms" in row.get(ref, {}):
                        row[f"speedup_fwd_vs_{ref}"] = round(row[ref]["fwd_ms"] / tri["fwd_ms"], 2)
                        row[f"speedup_fwdbwd_vs_{ref}"] = round(row[ref]["fwdbwd_ms"] / tri["fwdbwd_ms"], 2)
            del fargs
            if device.type == "cuda":
                torch.cuda.empty_cache()
            emit(results, args.json)
    return results


def compile_report(args: argparse.Namespace) -> dict[str, Any]:
    """--compile-for: what every variant's kernels need on sm_ARCH, without a GPU (batch 2: the
    compiled code does not depend on the batch size, and CPU memory stays small)."""
    compile_only = kernels_aot().compile_only
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    results: dict[str, Any] = {"benchmark": f"Triton kernels compiled for sm_{args.compile_for} (no launch)",
                               "hidden": args.hidden, "dtype": args.dtype, "launches": [], "errors": []}
    cases = {"seq_mixer_conv": (seq_mixer_case, seq_mixer_variants), "monarch_glu": (glu_case, glu_variants)}
    for length in args.lengths:
        for name in args.kernels:
            case, variants = cases[name]
            _, fargs, _, _ = case(2, length, args.hidden, dtype, torch.device("cpu"))
            grads_of = [a for a in fargs if isinstance(a, torch.Tensor) and a.requires_grad]
            for impl, fn in variants(length, args.hidden, args.warps).items():
                where = {"kernel_family": name, "length": length, "variant": impl}
                with compile_only(args.compile_for) as launches:
                    try:
                        out = fn(*fargs)
                        torch.autograd.grad(out, grads_of, torch.zeros_like(out))
                    except Exception as e:  # a compile error is the finding
                        results["errors"].append({**where, "error": f"{type(e).__name__}: {e}"[:1000]})
                results["launches"] += [{**where, **launch.as_dict()} for launch in launches]
                emit(results, args.json)
    results["all_fit"] = not results["errors"] and all(x["fits"] for x in results["launches"])
    return results


def emit(results: dict[str, Any], path: str | None) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(json.dumps(results, indent=2) + "\n")
        os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> None:
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--kernels", nargs="+", default=["seq_mixer_conv", "monarch_glu"],
                   choices=["seq_mixer_conv", "monarch_glu"])
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 8192], help="sequence lengths in tokens")
    p.add_argument("--batch", type=int, default=32, help="sequences per batch")
    p.add_argument("--hidden", type=int, default=768, help="channels (hidden size)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="activation dtype")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd reference")
    p.add_argument("--warps", type=int, nargs="+", default=None,
                   help="also measure the sequence mixer with each of these num_warps (default: the plan's)")
    p.add_argument("--warmup", type=int, default=3, help="untimed launches per measurement")
    p.add_argument("--repeats", type=int, default=10, help="timed launches per measurement (the median is reported)")
    p.add_argument("--json", default=None, help="write the results here too (rewritten after every measurement)")
    p.add_argument("--compile-for", type=int, default=None, metavar="ARCH",
                   help="no GPU needed: compile for sm_ARCH (90: H100/H200, 80: A100) and report resources")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: a smoke run of this script under
    # TRITON_INTERPRET=1 (tests/kernels/test_compiled.py); its times mean nothing
    args = p.parse_args(argv)
    if args.compile_for is not None:
        results = compile_report(args)
        emit(results, args.json)
        print(json.dumps(results, indent=2))
        sys.exit(0 if results["all_fit"] else 1)
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        pass
    elif not torch.cuda.is_available():
        sys.exit("bench/kernels.py measures the Triton kernels on a CUDA GPU, and none is visible here. "
                 "On CPU, their correctness tests run in `make test` (Triton interpreter).")
    results = run(args)
    emit(results, args.json)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
