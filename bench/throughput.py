"""Forward throughput (tokens/ms) of M2-BERT vs a reference, side by side in one process.

The reference is transformers' BERT (``--reference bert``, SDPA) or ModernBERT (``--reference modernbert``:
``ModernBertForMaskedLM`` at ModernBERT-base's published shape, 22 layers, width 768, MLP 1152, 12 heads,
global attention every 3rd layer, 128-token local windows, SDPA, random init, our vocabulary). Both models get
the same batch per length, the MLM head included (as in the paper's benchmark), after warm-up; calls
alternate; the ratio m2/reference is what to read. ``--compile best`` times each model eager and
torch.compile'd (inductor; the first, compiling call is part of the warm-up), ``--precision best`` in fp32 and
under bf16 autocast, and each model's best setting is compared, every setting reported. At lengths beyond the
reference's positions (ModernBERT: 8192) M2 runs alone. ``--rss`` measures each model's peak RSS at each length
in a fresh subprocess (one call at its best setting; where M2 runs alone, as an embedding, no MLM head). ``--quick``:
tiny sizes of both, one call, for tests. Examples:

    python bench/throughput.py --device cpu --lengths 128 512 2048 8192 --json out.json
    python bench/throughput.py --reference modernbert --lengths 512 2048 8192 32768 --precision best --rss \\
        --json bench/results/throughput_cpu_modernbert.json
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from m2bert.machine import cpu_flags, cpu_name
from m2bert import cli_help

log = logging.getLogger("bench.throughput")

# The paper's GPU batch sizes (M2: 32/32/16/8/4 at 512..8192; BERT: 32/32/8/4/2). On the CPU,
# both models get the same batch at each length, sized to keep a run within minutes.
PAPER_GPU_BATCH = {
    "m2": {512: 32, 1024: 32, 2048: 16, 4096: 8, 8192: 4},
    "bert": {512: 32, 1024: 32, 2048: 8, 4096: 4, 8192: 2},
}


def cpu_batch(length: int, tokens: int) -> int:
    return max(1, tokens // length)


def build_m2(
    preset: str, length: int, device: str, dtype: torch.dtype, impl: str, kernels: str = "auto"
) -> torch.nn.Module:
    from m2bert import M2BertConfig, M2BertForMaskedLM

    cfg = M2BertConfig.from_preset(preset, max_length=max(length, 128), long_conv_impl=impl, kernels=kernels)
    return M2BertForMaskedLM(cfg).to(device=device, dtype=dtype).eval()


BERT_SIZES = ("bert-base", "bert-small", "bert-tiny")


def bert_preset_for(m2_preset: str) -> str:
    """The BERT baseline of the same width and depth where one exists (tiny, small); bert-base otherwise."""
    return {"m2-bert-tiny": "bert-tiny", "m2-bert-small": "bert-small"}.get(m2_preset, "bert-base")


def build_bert(preset: str, length: int, vocab: int, device: str, dtype: torch.dtype, attn: str) -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    from m2bert.train.builders import BERT_PRESETS

    cfg = BertConfig(max_position_embeddings=max(length, 512), attn_implementation=attn, vocab_size=vocab,
                     **BERT_PRESETS[preset])
    return BertForMaskedLM(cfg).to(device=device, dtype=dtype).eval()


# ModernBERT-base's published shape (answerdotai/ModernBERT-base's config.json), and a tiny one for --quick.
MODERNBERT_SIZES: dict[str, dict[str, int]] = {
    "modernbert-base": dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
                            global_attn_every_n_layers=3, local_attention=128, max_position_embeddings=8192),
    "modernbert-tiny": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2,
                            global_attn_every_n_layers=3, local_attention=128, max_position_embeddings=512),
}


def build_modernbert(size: str, vocab: int, device: str, dtype: torch.dtype, attn: str,
                     head: bool = True) -> torch.nn.Module:
    """``ModernBertForMaskedLM`` (or, ``head=False``, ``ModernBertModel``) at ``size``, random init, our vocabulary
    (special tokens at BERT's ids: its own defaults lie beyond our vocabulary). transformers' own compile switch is
    off: compiling is this benchmark's ``compiled`` setting."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM, ModernBertModel

    cfg = ModernBertConfig(vocab_size=vocab, pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101,
                           eos_token_id=102, attn_implementation=attn, reference_compile=False,
                           **MODERNBERT_SIZES[size])
    return (ModernBertForMaskedLM if head else ModernBertModel)(cfg).to(device=device, dtype=dtype).eval()


def reference_max_length(reference: str, size: str) -> float:
    """The longest input the reference takes: ModernBERT's position count (its RoPE tables stop there)."""
    return MODERNBERT_SIZES[size]["max_position_embeddings"] if reference == "modernbert" else math.inf


def build_reference(args: argparse.Namespace, length: int, vocab: int, dtype: torch.dtype) -> torch.nn.Module:
    if args.reference == "modernbert":
        return build_modernbert(args.reference_preset, vocab, args.device, dtype, args.attn)
    return build_bert(args.reference_preset, length, vocab, args.device, dtype, args.attn)


def time_side_by_side(fns: dict[str, Callable[[], Any]], device: str, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each timed call of each function, by round; calls alternate (order reversed every round) so that every
    function sees the same machine: on a shared CPU, back-to-back runs differ by ±10%."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(warmup):
                fn()
            sync()
            if "compiled" in name:
                log.info("warm-up of %s (compiling included): %.1f s", name, time.perf_counter() - t0)
        for r in range(repeats):
            for name in list(fns)[:: 1 if r % 2 == 0 else -1]:
                t0 = time.perf_counter()
                fns[name]()
                sync()
                times[name].append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def forward_call(model: Callable[..., Any], batch: int, length: int, vocab: int, device: str,
                 bf16: bool = False, embed: bool = False) -> Callable[[], Any]:
    """One forward of a fixed random batch; ``bf16``: under bf16 autocast (weights stay fp32); ``embed``: the
    sentence embedding of an encoder without MLM head (``M2BertModel.embed``)."""
    ids = torch.randint(1000 if vocab > 2000 else 5, vocab, (batch, length), device=device)
    mask = torch.ones_like(ids)
    device_type = torch.device(device).type

    def call() -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            return model.embed(ids, mask) if embed else model(input_ids=ids, attention_mask=mask)
    return call


def settings_of(compile_choice: str, precision: str) -> list[str]:
    """The settings each model is timed in: eager / compiled, each in fp32 and/or bf16 autocast (``*_bf16``)."""
    modes = {"false": ["eager"], "true": ["compiled"], "best": ["eager", "compiled"]}[compile_choice]
    suffixes = {"fp32": [""], "bf16": ["_bf16"], "best": ["", "_bf16"]}[precision]
    return [mode + suffix for suffix in suffixes for mode in modes]


def prepared(model: torch.nn.Module, setting: str, batch: int, length: int, vocab: int, device: str,
             embed: bool = False) -> Callable[[], Any]:
    """The timed call of ``model`` in ``setting`` (compiled views share the eager module's weights)."""
    fn: Callable[..., Any] = model
    if setting.startswith("compiled"):
        from m2bert.train.torch_compile import compile_module

        fn = compile_module(model, dynamic=False)
        if embed:
            fn.embed = lambda ids, mask: fn(input_ids=ids, attention_mask=mask, return_sentence_embedding=True,
                                            return_dict=True).sentence_embedding
    return forward_call(fn, batch, length, vocab, device, bf16=setting.endswith("_bf16"), embed=embed)


def peak_rss_child(args: argparse.Namespace, side: str, length: int, setting: str, embed: bool = False) -> float | None:
    """Peak resident memory (MB) of a fresh process that builds ``side`` and runs one call at ``length`` in
    ``setting``: the honest peak of one model, not the high-water mark of a process that held both."""
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-child", side, "--rss-setting", setting,
           "--lengths", str(length), "--device", args.device, "--dtype", args.dtype, "--preset", args.preset,
           "--long-conv-impl", args.long_conv_impl, "--kernels", args.kernels, "--reference", args.reference,
           "--reference-preset", args.reference_preset, "--attn", args.attn, "--tokens", str(args.tokens),
           "--threads", str(torch.get_num_threads())] + (["--rss-embed"] if embed else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.warning("peak RSS of %s at %d (%s) not measured: %s", side, length, setting,
                    (done.stderr.strip().splitlines() or ["no output"])[-1])
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def rss_child(args: argparse.Namespace) -> dict[str, float]:
    """What ``peak_rss_child`` runs in the fresh process: build, one call, report the peak resident memory."""
    length = args.lengths[0]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    vocab = M2_VOCAB
    batch = cpu_batch(length, args.tokens) if args.device == "cpu" else 1
    if args.rss_child == "m2":
        model = build_m2(args.preset, length, args.device, dtype, args.long_conv_impl, args.kernels)
        vocab = model.config.vocab_size
        if args.rss_embed:
            model = model.bert
    else:
        model = build_reference(args, length, vocab, dtype)
    with torch.inference_mode():
        prepared(model, args.rss_setting, batch, length, vocab, args.device, embed=args.rss_embed)()
    return {"peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's own peak resident memory: ``VmHWM``, which starts afresh at exec. Not ``ru_maxrss``: Linux
    carries the forking parent's high-water mark into the exec'd child's, so a child forked from a process that
    held both models reported that process's peak for either model."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


M2_VOCAB = 30528  # the M2 presets' vocabulary (bert-base-uncased's 30522, rounded up to a multiple of 8)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but no CUDA GPU is visible; run with --device cpu or on a GPU machine")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    ref = args.reference
    ref_desc = (f"transformers ModernBertForMaskedLM ({args.reference_preset}: "
                f"{MODERNBERT_SIZES[args.reference_preset]}), random init, attn_implementation={args.attn}"
                if ref == "modernbert" else
                f"transformers BertForMaskedLM ({args.reference_preset}), attn_implementation={args.attn}")
    settings = settings_of(args.compile, args.precision)
    results: dict[str, Any] = {
        "benchmark": "forward throughput, MLM head included; calls alternate between the models",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python bench/throughput.py " + " ".join(args.argv),
        "device": device,
        "dtype": args.dtype,
        "m2_preset": args.preset,
        "m2_kernels": args.kernels,
        "compile": args.compile,
        "precision": args.precision,
        "settings": settings,
        "reference": ref,
        ref: ref_desc,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": cpu_name(),
        "cpu_flags": cpu_flags(),
        "warmup": args.warmup,
        "long_from": args.long_from,
        "long_warmup": args.long_warmup,
        "repeats": args.repeats,
        "solo_repeats": args.solo_repeats,
        "params": {},
        "lengths": {},
    }
    ref_max = reference_max_length(ref, args.reference_preset)
    m2_last_best = None
    for length in args.lengths:
        sides = ["m2", ref] if length <= ref_max else ["m2"]
        alone = len(sides) == 1
        # Alone, M2 runs in its best setting at the longest length both ran (calls take minutes there, and nothing
        # is compared); with no such length, in every setting.
        length_settings = [m2_last_best] if alone and m2_last_best else settings
        if device.startswith("cuda"):
            batches = {"m2": PAPER_GPU_BATCH["m2"].get(length, 32), ref: PAPER_GPU_BATCH["bert"].get(length, 32)}
        else:
            batches = dict.fromkeys(("m2", ref), cpu_batch(length, args.tokens))
        m2 = build_m2(args.preset, length, device, dtype, args.long_conv_impl, args.kernels)
        vocab = m2.config.vocab_size  # the same MLM head size for both
        models = {"m2": m2}
        if ref in sides:
            models[ref] = build_reference(args, length, vocab, dtype)
        for name, model in models.items():
            results["params"][name] = sum(p.numel() for p in model.parameters())
        fns = {f"{name}_{setting}": prepared(model, setting, batches[name], length, vocab, device)
               for name, model in models.items() for setting in length_settings}
        # From --long-from on a call takes tens of seconds, next to which its one-time costs are small: no warm-up.
        # Alone nothing alternates: --solo-repeats, no spread to draw.
        rounds = time_side_by_side(fns, device, args.warmup if length < args.long_from else args.long_warmup,
                                   args.repeats if not alone else args.solo_repeats)
        secs = {name: median(ts) for name, ts in rounds.items()}
        row: dict[str, Any] = {f"{name}_batch": batches[name] for name in sides}
        for name in sides:
            per_setting = {setting: secs[f"{name}_{setting}"] for setting in length_settings}
            if len(length_settings) > 1:
                for setting, sec in per_setting.items():
                    row[f"{name}_{setting}_tok_per_ms"] = round(batches[name] * length / (sec * 1e3), 3)
            best = min(per_setting, key=per_setting.__getitem__)
            row[f"{name}_best"] = best
            row[f"{name}_tok_per_ms"] = round(batches[name] * length / (per_setting[best] * 1e3), 3)
            row[f"{name}_tok_per_s"] = round(row[f"{name}_tok_per_ms"] * 1e3, 1)
            row[f"{name}_ms_per_batch"] = round(per_setting[best] * 1e3, 2)
        if alone:
            row[ref] = f"not run: {ref} takes at most {ref_max:.0f} positions"
            row["m2_settings_tried"] = length_settings
        else:
            m2_last_best = row["m2_best"]
            row["ratio"] = round(row["m2_tok_per_ms"] / row[f"{ref}_tok_per_ms"], 3)
            # The spread: the ratio within each round of the alternation (best settings, per token).
            per_round = [(batches["m2"] / m) / (batches[ref] / b)
                         for m, b in zip(rounds[f"m2_{row['m2_best']}"], rounds[f"{ref}_{row[f'{ref}_best']}"])]
            row["ratio_per_round"] = {"min": round(min(per_round), 3), "median": round(median(per_round), 3),
                                      "max": round(max(per_round), 3)}
        del models, fns, m2, model
        if args.rss and alone:  # M2 alone: the embedding's peak (the long-document use), no MLM head
            row["m2_embed_peak_rss_mb"] = peak_rss_child(args, "m2", length, row["m2_best"], embed=True)
        elif args.rss:
            for name in sides:
                row[f"{name}_peak_rss_mb"] = peak_rss_child(args, name, length, row[f"{name}_best"])
        results["lengths"][str(length)] = row
        log.info("L=%d %s", length, row)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048, 8192], help="sequence lengths in tokens")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--preset", default="m2-bert-base-80m", help="M2BertConfig preset")
    p.add_argument("--long-conv-impl", default="fft", choices=["fft", "monarch", "direct"], help="long convolution path")
    p.add_argument("--kernels", default="auto", choices=["auto", "triton", "torch"],
                   help="M2 config `kernels`: auto = fused Triton kernels on CUDA, PyTorch elsewhere")
    p.add_argument("--compile", choices=["false", "true", "best"], default="false",
                   help="torch.compile the models: false (eager), true, or best (both, each model's best compared)")
    p.add_argument("--precision", choices=["fp32", "bf16", "best"], default="fp32",
                   help="bf16: under bf16 autocast (weights in --dtype); best: both, each model's best compared")
    p.add_argument("--reference", choices=["bert", "modernbert"], default="bert",
                   help="the model M2 is compared with: transformers' BERT or ModernBERT")
    p.add_argument("--reference-preset", "--bert-preset", default=None,
                   help="the reference's size: bert-base, bert-small, bert-tiny (default: the M2 preset's width and "
                   "depth where it exists, else bert-base); modernbert-base, modernbert-tiny (default base)")
    p.add_argument("--attn", default="sdpa", help="the reference's attention implementation (sdpa, eager)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (m2-bert-tiny, bert-tiny / modernbert-tiny), 256 tokens per batch, one call: "
                   "checks the plumbing in seconds, measures nothing")
    p.add_argument("--rss", action="store_true", help="also each model's peak RSS per length, in fresh subprocesses")
    p.add_argument("--tokens", type=int, default=2048, help="CPU: tokens per batch (batch = tokens // length, at least 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed forward passes per length")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes per length (the median is reported)")
    p.add_argument("--long-from", type=int, default=8192, help="lengths from which --long-warmup applies")
    p.add_argument("--long-warmup", type=int, default=0,
                   help="untimed passes per length from --long-from on (a call takes tens of seconds there)")
    p.add_argument("--solo-repeats", type=int, default=1,
                   help="timed passes where M2 runs alone (beyond the reference's positions; nothing to alternate)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="write the results here too")
    p.add_argument("--rss-child", choices=["m2", "bert", "modernbert"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--rss-setting", default="eager", help=argparse.SUPPRESS)
    p.add_argument("--rss-embed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.dtype is None:
        args.dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    if args.quick:
        args.preset, args.tokens, args.warmup, args.repeats = "m2-bert-tiny", 256, 0, 1
        args.reference_preset = args.reference_preset or f"{args.reference}-tiny"
    if args.reference_preset is None:
        args.reference_preset = "modernbert-base" if args.reference == "modernbert" else bert_preset_for(args.preset)
    sizes = MODERNBERT_SIZES if args.reference == "modernbert" else BERT_SIZES
    if args.reference_preset not in sizes:
        p.error(f"--reference-preset {args.reference_preset} is not a {args.reference} size; choose one of "
                f"{', '.join(sizes)}")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        print(json.dumps(rss_child(args)))  # read by peak_rss_child
        return
    results = run(args)
    text = json.dumps(results, indent=2)
    if args.json:
        from m2bert.atomic import atomic_write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_json(args.json, results)
    print(text)  # the JSON on stdout is this tool's output


if __name__ == "__main__":
    main()
