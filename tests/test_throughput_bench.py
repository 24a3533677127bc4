"""bench/throughput.py against ModernBERT in its quick mode: both models build at tiny size and run side by side in
fp32 and under bf16 autocast, each model's best setting is named, the ratio is M2's tokens/s over ModernBERT's,
and beyond ModernBERT's positions M2 runs alone (the row says so). Speed itself is measured by the benchmark."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_bench

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return load_bench("throughput")


def test_quick_modernbert_side_by_side_and_m2_alone_beyond_its_positions(tmp_path, capsys):
    out = tmp_path / "mb.json"
    _bench().main(["--quick", "--reference", "modernbert", "--precision", "best", "--lengths", "256", "640",
                   "--threads", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["reference"] == "modernbert" and "ModernBertForMaskedLM (modernbert-tiny" in result["modernbert"]
    assert result["settings"] == ["eager", "eager_bf16"] and result["params"]["modernbert"] > 0
    both, alone = result["lengths"]["256"], result["lengths"]["640"]
    for side in ("m2", "modernbert"):
        assert both[f"{side}_best"] in ("eager", "eager_bf16")
        best = max(both[f"{side}_eager_tok_per_ms"], both[f"{side}_eager_bf16_tok_per_ms"])
        assert both[f"{side}_tok_per_s"] == pytest.approx(best * 1e3, abs=0.1)
    assert both["ratio"] == round(both["m2_tok_per_ms"] / both["modernbert_tok_per_ms"], 3)
    assert "ratio" not in alone and alone["modernbert"] == "not run: modernbert takes at most 512 positions"
    assert alone["m2_settings_tried"] == [both["m2_best"]] and alone["m2_tok_per_s"] > 0
    assert json.loads(capsys.readouterr().out)["lengths"]["256"]["ratio"] == both["ratio"]


def test_peak_rss_is_measured_in_a_fresh_process():
    """The child's own peak, not the forking parent's: with 1 GiB held here, a tiny model's call reports far less
    (Linux carries the parent's high-water mark into ``ru_maxrss`` across fork and exec; VmHWM starts afresh)."""
    import torch

    bench = _bench()
    args = bench.parse_args(["--quick", "--reference", "modernbert", "--threads", "1"])
    ballast = torch.ones(2**28)  # 1 GiB, touched
    rss = bench.peak_rss_child(args, "m2", 256, "eager_bf16", embed=True)
    assert rss is not None and 50 < rss < 1000 < bench.peak_rss_mb()  # MB: a Python with torch, a tiny model, one call
    del ballast


def test_train_bench_tiny_in_fp32_and_bf16_autocast(tmp_path):
    """bench/train_throughput.py --precision best: each model steps in fp32 and under bf16 autocast (tiny sizes,
    one step), each model's best is one of its settings and the ratio is best over best."""
    out = tmp_path / "train.json"
    load_bench("train_throughput").main(["--m2", "m2-bert-tiny", "--bert", "bert-tiny", "--steps", "1", "--warmup",
                                         "0", "--compile", "false", "--precision", "best", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["settings"] == {"m2": ["eager", "eager_bf16"], "bert": ["eager", "eager_bf16"]}
    for side in ("m2", "bert"):
        rates = {s: result[f"{side}_{s}_tokens_per_s"] for s in result["settings"][side]}
        assert min(rates.values()) > 0 and result[f"{side}_best"] == max(rates, key=rates.get)
    assert result["ratio"] == pytest.approx(result["m2_tokens_per_s"] / result["bert_tokens_per_s"], abs=2e-3)
