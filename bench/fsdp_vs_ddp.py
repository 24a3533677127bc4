"""parallel=fsdp vs parallel=ddp through Composer's launcher: the same short m2-bert-tiny run on the offline
sample must give the same eval loss and the same exported weights (FSDP wraps each parameter once and the
export gathers the shards). Prints and writes one JSON object; exits 1 when the runs disagree.

On GPUs (bench/gpu_check.sh: one process per visible GPU) this is Composer's FSDP, the one ``parallel=fsdp``
uses; on CPU Composer's FSDP needs CUDA, so there it runs Composer's FSDP2 (``FSDP_VERSION=2``), as
tests/test_pretrain.py does.

    python bench/fsdp_vs_ddp.py --nproc 2 --out /tmp/fsdp_vs_ddp [--batches 2] [--precision fp32]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def run_pair(data: dict[str, Path], out: Path, nproc: int, batches: int, precision: str) -> dict[str, Any]:
    """Launch the ddp and the fsdp run; return their summaries and where each one's log is."""
    composer = str(Path(sys.executable).parent / "composer")
    common = [
        "model=m2_bert_tiny", "data=sample", f"data.local={data['mds']}", f"data.tokenizer={data['tokenizer']}",
        f"global_train_batch_size={8 * nproc}", "impl.device_train_microbatch_size=8", "device_eval_batch_size=64",
        "eval_subset_num_batches=2", "optimizer.lr=2e-3", f"max_duration={batches}ba", f"eval_interval={batches}ba",
        "save_interval=1000ba", "console_log_interval=1ba", "+model.overrides.hidden_dropout_prob=0.0",
        f"precision={precision}", "export_hf=true", "overwrite=true", f"run_root={out / 'runs'}",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not torch.cuda.is_available():
        env["FSDP_VERSION"] = "2"
    summaries = {}
    for parallel in ("ddp", "fsdp"):
        log = out / f"{parallel}.log"
        with open(log, "w") as f:
            rc = subprocess.run([composer, "-n", str(nproc), "-m", "m2bert.pretrain", *common, f"parallel={parallel}",
                                 f"run_name={parallel}"], env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise SystemExit(f"{parallel} run failed (rc={rc}); see {log}")
        summaries[parallel] = json.loads((out / "runs" / parallel / "summary.json").read_text())
    return summaries


def compare(out: Path, summaries: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import load_file

    ddp, fsdp = (load_file(out / "runs" / p / "hf" / "model.safetensors") for p in ("ddp", "fsdp"))
    return {
        "eval_loss": {p: s["eval"][-1]["loss"] for p, s in summaries.items()},
        "eval_loss_diff": abs(summaries["ddp"]["eval"][-1]["loss"] - summaries["fsdp"]["eval"][-1]["loss"]),
        "same_tensor_names": sorted(ddp) == sorted(fsdp),
        "max_weight_diff": max((ddp[k] - fsdp[k]).abs().max().item() for k in ddp if k in fsdp),
    }


def main(argv: list[str] | None = None) -> int:
    from m2bert.demo import build_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/results/fsdp_vs_ddp"))
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--precision", default="fp32", help="fp32 compares tightly; amp_bf16 is the GPU default")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest eval-loss difference accepted")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = build_data(args.out / "data", vocab_size=2048)
    result = {"nproc": args.nproc, "batches": args.batches, "precision": args.precision,
              "device": "cuda" if torch.cuda.is_available() else "cpu (FSDP_VERSION=2)",
              **compare(args.out, run_pair(data, args.out, args.nproc, args.batches, args.precision))}
    result["ok"] = result["same_tensor_names"] and result["eval_loss_diff"] < args.tolerance
    (args.out / "fsdp_vs_ddp.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
