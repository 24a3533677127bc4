"""bench/quality_study.py's quick mode: the real pipeline (corpus from ../shared → MDS → pretraining of M2 and
BERT → the GLUE driver on five real tasks) with a few batches and rows; checks the plumbing and the results
layout, not the numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"cola", "sst2", "mrpc", "stsb", "rte"}


def test_quick_mode_writes_the_study_layout(tmp_path):
    shared = shared_path("data").parent
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "bench/quality_study.py", "--shared", str(shared), "--out", str(out), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "quality_study.json").read_text())
    assert result["quick"] is True and set(result["models"]) == {"m2", "bert"}
    m2, bert = result["models"]["m2"], result["models"]["bert"]
    assert (m2["preset"], bert["preset"]) == ("m2-bert-small", "bert-small")
    assert m2["parameters"] < bert["parameters"]  # M2 with no more parameters than BERT
    assert m2["pretrain_tokens"] == bert["pretrain_tokens"] == 2 * 8 * 128
    for m in (m2, bert):
        assert set(m["glue"]) == TASKS and all(-100 <= v <= 100 for v in m["glue"].values())
        assert abs(m["glue_average"] - sum(m["glue"].values()) / 5) < 0.02
        assert m["final_mlm_loss"] > 0 and m["pretrain_seconds"] > 0 and m["tokens_per_second"] > 0
        assert [c["tokens"] for c in m["loss_curve"]] == [0, 2 * 8 * 128]  # eval at start and at the end
        assert set(m["glue_metrics"]["mrpc"]) == {"f1", "accuracy"} and m["glue"]["mrpc"] == m["glue_metrics"]["mrpc"]["f1"]
        assert m["glue"]["stsb"] == m["glue_metrics"]["stsb"]["spearmanr"]  # the paper's metric set
    # both models saw the same held-out data: their losses at start are of the same untrained order
    assert abs(m2["loss_curve"][0]["loss"] - bert["loss_curve"][0]["loss"]) < 1.5
    md = (out / "quality_study.md").read_text()
    assert "| parameters |" in md and "MRPC (F1)" in md and "QUICK MODE" in md and result["command"] in md
    assert (out / "quality_study.png").stat().st_size > 10_000
