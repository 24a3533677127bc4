"""Training throughput (tokens/s, fwd + bwd + optimizer step) of M2-BERT vs the BERT baseline.

Same process, same batch, same MLM objective (30% masking, decoder on masked positions only,
as in pretraining), steps alternating between the models after warm-up. Each model runs eager
and torch.compile'd (inductor, the forward compiled as Composer's ``compile_config`` does; same
weights and optimizer, so both settings see the same training state); the JSON reports both
settings, each model's best, and ``ratio`` = best M2 / best BERT. ``--precision bf16|best`` adds steps under bf16
autocast (``*_bf16``; weights, gradients and optimizer in fp32, as Composer's ``amp_bf16``): on a CPU with AMX or
avx512_bf16 that is a setting users train in.

    python bench/train_throughput.py --batch 16 --length 128 --json bench/results/train_cpu.json
    python bench/train_throughput.py --compile false     # eager only (no minutes of compiling)
    python bench/train_throughput.py --compile m2 --precision best --json bench/results/train_cpu_best.json
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from m2bert.machine import cpu_flags, cpu_name
from m2bert import cli_help
from m2bert.train.builders import build_mlm_model, build_optimizer
from m2bert.train.composer_models import ComposerMLM
from m2bert.train.torch_compile import compile_module

log = logging.getLogger("bench.train_throughput")


def build(family: str, preset: str, length: int) -> tuple[ComposerMLM, torch.optim.Optimizer]:
    model_cfg = OmegaConf.create({"family": family, "preset": preset, "overrides": {}})
    impl = OmegaConf.create({"kernels": "torch", "long_conv_impl": "fft"})
    torch.manual_seed(0)
    model = build_mlm_model(model_cfg, impl, tokenizer_len=30522, max_seq_len=length)
    opt_cfg = {"name": "decoupled_adamw", "lr": 8e-4, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 1e-5}
    return ComposerMLM(model).train(), build_optimizer(model, OmegaConf.create(opt_cfg))


def mlm_batch(batch: int, length: int) -> dict[str, torch.Tensor]:
    """A fixed random MLM batch: 30% of the positions masked, as in pretraining."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, length), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": labels}


def train_step(wrapped: ComposerMLM, forward: Any, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               bf16: bool = False) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = wrapped.loss(forward(batch), batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def measure(models: dict[str, tuple[ComposerMLM, Any, torch.optim.Optimizer, bool]], batch: dict[str, torch.Tensor],
            steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each timed step per model and setting; steps alternate between them so that all see
    the same machine (on a shared 2-core machine, back-to-back runs differ by ±10%)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(warmup + steps):
        for name, (wrapped, forward, opt, bf16) in models.items():
            t = train_step(wrapped, forward, opt, batch, bf16)
            if i == 0 and name.endswith("compiled"):
                log.info("torch.compile: first step of %s took %.1f s", name, t)
            if i >= warmup:
                times[name].append(t)
    log.info("step seconds: %s", {n: [round(t, 2) for t in ts] for n, ts in times.items()})
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=3, help="timed training steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps")
    p.add_argument("--m2", default="m2-bert-base-80m", help="M2BertConfig preset")
    p.add_argument("--bert", default="bert-base", help="BERT baseline preset (bert-base, bert-tiny)")
    p.add_argument("--compile", choices=["both", "true", "false", "m2"], default="both",
                   help="both: each model eager and compiled, the best of each compared; true/false: one setting; "
                   "m2: M2 both, BERT eager only (compiling gained BERT nothing on the 2-core CPU: 192 vs 192 "
                   "tokens/s, train_cpu_best.json of 2026-11-29; saves its minutes of compiling)")
    p.add_argument("--precision", choices=["fp32", "bf16", "best"], default="fp32",
                   help="bf16: steps under bf16 autocast; best: both, each model's best compared")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    batch = mlm_batch(args.batch, args.length)
    both = ("eager", "compiled")
    settings = {"both": {"m2": both, "bert": both}, "true": dict.fromkeys(("m2", "bert"), ("compiled",)),
                "false": dict.fromkeys(("m2", "bert"), ("eager",)), "m2": {"m2": both, "bert": ("eager",)}}[args.compile]
    suffixes = {"fp32": ("",), "bf16": ("_bf16",), "best": ("", "_bf16")}[args.precision]
    settings = {f: tuple(mode + suffix for suffix in suffixes for mode in modes) for f, modes in settings.items()}
    models: dict[str, tuple[ComposerMLM, Any, torch.optim.Optimizer, bool]] = {}
    for family, preset in (("m2", args.m2), ("bert", args.bert)):
        wrapped, opt = build(family, preset, args.length)
        compiled = compile_module(wrapped, dynamic=False) if any("compiled" in s for s in settings[family]) else None
        for setting in settings[family]:  # the same module and optimizer: compiled is a view of the same weights
            forward = compiled if setting.startswith("compiled") else wrapped
            models[f"{family}_{setting}"] = (wrapped, forward, opt, setting.endswith("_bf16"))
    times = measure(models, batch, args.steps, args.warmup)
    tps = {name: batch["input_ids"].numel() / median(ts) for name, ts in times.items()}
    best = {f: max(settings[f], key=lambda s: tps[f"{f}_{s}"]) for f in ("m2", "bert")}
    m2, bert = tps[f"m2_{best['m2']}"], tps[f"bert_{best['bert']}"]
    # The spread: the ratio of each step pair (the same round of the alternation), best settings.
    pairs = [b / m for m, b in zip(times[f"m2_{best['m2']}"], times[f"bert_{best['bert']}"])]
    result = {
        "benchmark": "training tokens/s (fwd+bwd+DecoupledAdamW step), MLM 30% masking",
        "precision": args.precision, "settings": settings,
        "optimizer": f"{type(opt).__module__}.{type(opt).__name__}",  # build_optimizer's, as pretraining uses
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:]),
        "machine": cpu_name(), "cpu_flags": cpu_flags(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "device": "cpu", "threads": torch.get_num_threads(), "batch": args.batch, "length": args.length,
        "m2": args.m2, "bert": args.bert, "steps": args.steps, "warmup": args.warmup,
        **{f"{name}_tokens_per_s": round(v, 1) for name, v in tps.items()},
        "step_seconds": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
        "m2_best": best["m2"], "bert_best": best["bert"],
        "m2_tokens_per_s": round(m2, 1), "bert_tokens_per_s": round(bert, 1), "ratio": round(m2 / bert, 3),
        "ratio_per_step": {"min": round(min(pairs), 3), "median": round(median(pairs), 3), "max": round(max(pairs), 3)},
    }
    text = json.dumps(result, indent=2)
    if args.json:
        from m2bert.atomic import atomic_write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_json(args.json, result)
    print(text)


if __name__ == "__main__":
    main()
