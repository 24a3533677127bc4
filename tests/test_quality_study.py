"""bench/quality_study.py's quick mode, through bench/gpu_study.sh's CPU miniature: the real pipeline (corpus from
../shared → MDS → lr probe → pretraining of the M2 recipes and BERT → the GLUE driver on five real tasks) with a
few batches and rows; checks the plumbing and the results layout, not the numbers."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"cola", "sst2", "mrpc", "stsb", "rte"}


def test_gpu_study_miniature_writes_the_study_layout(tmp_path):
    shared = shared_path("data").parent
    out = tmp_path / "results"
    proc = subprocess.run(["bash", "bench/gpu_study.sh", "--mini", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "SHARED": str(shared),
                                            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "quality_study.json").read_text())
    assert result["quick"] is True and set(result["models"]) == {"m2", "m2_original", "bert"}
    models = result["models"]
    m2, bert = models["m2"], models["bert"]
    assert (m2["preset"], bert["preset"]) == ("m2-bert-small", "bert-small")
    assert m2["parameters"] <= bert["parameters"]  # M2 with no more parameters than BERT
    assert "filters=original" in models["m2_original"]["recipe"] and "filters=keep" in m2["recipe"]
    assert result["lr_probe"]["chosen"].keys() == {"bert", "m2"}
    for m in models.values():
        assert m["pretrain_tokens"] == 2 * 8 * 128 and any(r.startswith("optimizer.lr=") for r in m["recipe"])
        assert set(m["glue"]) == TASKS and all(-100 <= v <= 100 for v in m["glue"].values())
        assert abs(m["glue_average"] - sum(m["glue"].values()) / 5) < 0.02
        assert m["final_mlm_loss"] > 0 and m["pretrain_seconds"] > 0 and m["tokens_per_second"] > 0
        assert [c["tokens"] for c in m["loss_curve"]] == [0, 2 * 8 * 128]  # eval at start and at the end
        assert set(m["glue_metrics"]["mrpc"]) == {"f1", "accuracy"} and m["glue"]["mrpc"] == m["glue_metrics"]["mrpc"]["f1"]
        assert m["glue"]["stsb"] == m["glue_metrics"]["stsb"]["spearmanr"]  # the paper's metric set
        assert m["context_use"]["masked_tokens"] > 0 and set(m["context_gain"]) == {"window", "right"}
    for key in ("m2", "m2_original"):  # M2's filters are measured at every eval, relative to init
        assert [r["batch"] for r in models[key]["filter_energy_curve"]] == [0, 2]
        assert 0 < models[key]["filter_energy_final"] < 10
    assert bert["filter_energy_curve"] == [] and bert["filter_energy_final"] is None
    assert set(result["goal"]["checks"]) >= {"filters_above_10pct_of_init", "glue_average_within_1_point"}
    # every model saw the same held-out data: their losses at start are of the same untrained order
    assert max(m["loss_curve"][0]["loss"] for m in models.values()) - min(m["loss_curve"][0]["loss"] for m in models.values()) < 1.5
    md = (out / "quality_study.md").read_text()
    assert "| parameters |" in md and "MRPC (F1)" in md and "QUICK MODE" in md and result["command"] in md
    assert "context gain from the right" in md and "unigram plateau" in md.lower()
    assert (out / "quality_study.png").stat().st_size > 10_000
