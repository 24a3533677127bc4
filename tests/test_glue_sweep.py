"""A Hydra multirun over two learning rates ends with the sweep report (acceptance 3), through the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from m2bert import M2BertConfig, M2BertForMaskedLM


def test_sweep_over_two_learning_rates(sample_mds, tmp_path):
    from m2bert.data.tokenizer import load_tokenizer

    hf = tmp_path / "hf"
    torch.manual_seed(0)
    tok = load_tokenizer(sample_mds["tokenizer"])
    M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=2048)).save_pretrained(hf)
    tok.save_pretrained(hf)
    cmd = [sys.executable, "-m", "m2bert.glue.driver", "-m", "glue=m2_bert_tiny", f"start.path={hf}",
           f"data.source={sample_mds['raw'] / 'glue'}", "tasks=[sample-pair]", "glue.sample_pair.seeds=[19,717]",
           "glue.sample_pair.lr=1e-4,3e-3", "train_subset=32", "eval_subset=64", "max_duration=3ba",
           "data.pad_to_max_length=false", f"run_root={tmp_path}", "run_name=sweep", "hydra.sweep.dir=" + str(tmp_path / "sw")]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    report = json.loads((tmp_path / "sw" / "sweep_report.json").read_text())
    rows = report["rows"]
    assert {r["setting"] for r in rows} == {"glue.sample_pair.lr=0.003", "glue.sample_pair.lr=0.0001"}
    assert all(r["task"] == "sample-pair" and r["seeds"] == 2 for r in rows)
    assert sum(r["best"] for r in rows) == 1
    best = max(rows, key=lambda r: r["mean"])
    assert best["best"]
    md = (tmp_path / "sw" / "sweep_report.md").read_text()
    assert "± " in md and "**best**" in md and (tmp_path / "sw" / "sweep_report.csv").exists()
    for job in ("0", "1"):  # each sweep job wrote its own results in its own folder
        res = json.loads((tmp_path / "sw" / job / "results.json").read_text())
        assert res["tasks"]["sample-pair"]["seeds"] == [19, 717]
    assert "**best**" in out.stdout  # the report is the CLI's last output
