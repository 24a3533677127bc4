"""bench/embed_throughput.py on a few real documents: padded-to-maximum and length-bucketed batching give the
same embeddings (the padding-invariance the benchmark's speed-up rests on), and the bucketed batches respect
the token budget of one padded batch. Speed itself is measured by the benchmark, not here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_bench, shared_path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return load_bench("embed_throughput")


def test_bucketed_batches_sort_and_fit_the_budget():
    bench = _bench()
    lengths = [900, 10, 300, 2000, 64, 1500, 129]
    batches = bench.bucketed_batches(lengths, token_budget=2048, multiple=128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every document once
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)
    for b in batches:
        longest = -(-max(lengths[i] for i in b) // 128) * 128
        assert len(b) == 1 or len(b) * longest <= 2048


def test_padded_and_bucketed_embeddings_agree(tmp_path, capsys):
    shared = shared_path("data", "wikitext").parents[1]
    bench = _bench()
    bench.main(["--shared", str(shared), "--docs", "12", "--max-length", "1024", "--batch", "2", "--repeats", "1",
                "--out", str(tmp_path), "--name", "tiny"])
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["documents"]["count"] == 12 and result["documents"]["max_tokens"] <= 1024
    assert result["max_abs_embedding_difference"] < 1e-4
    assert result["batches"]["bucketed"]["count"] < result["batches"]["padded_to_max"]["count"]
    assert result["ratio"] > 0 and (tmp_path / "tiny.md").is_file() and (tmp_path / "tiny.png").is_file()
    assert json.loads(capsys.readouterr().out)["ratio"] == result["ratio"]


def test_an_earlier_result_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "tiny.json").write_text("{}")
    shared = shared_path("data", "wikitext").parents[1]
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--shared", str(shared), "--out", str(tmp_path), "--name", "tiny"])
    assert exc.value.code == 2 and "tiny.json exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "tiny.json").read_text() == "{}"


def test_bf16_check_and_modernbert_reference(tmp_path):
    """--bf16-check embeds the bucketed batches in fp32 and under bf16 autocast and reports both speeds and the
    cosine between them against the 0.999 bound; --reference modernbert embeds the same batches with ModernBERT."""
    shared = shared_path("data", "wikitext").parents[1]
    bench = _bench()
    bench.main(["--shared", str(shared), "--docs", "6", "--max-length", "512", "--batch", "2",
                "--repeats", "1", "--bf16-check", "--reference", "modernbert", "--reference-preset", "modernbert-tiny",
                "--out", str(tmp_path), "--name", "tiny"])
    result = json.loads((tmp_path / "tiny.json").read_text())
    b = result["bf16"]
    assert set(b["docs_per_s"]) == {"fp32", "bf16"} and b["bound"] == 0.999
    assert 0.99 < b["cosine_to_fp32"]["min"] <= b["cosine_to_fp32"]["mean"] <= 1.0 + 1e-6
    assert b["bf16_default_warranted"] == (b["speedup"] > 1 and b["cosine_to_fp32"]["min"] >= 0.999)
    ref = result["reference"]
    assert ref["params"] > 0 and ref["m2_over_modernbert"] == result["docs_per_s"]["bucketed"] / ref["docs_per_s"]
    md = (tmp_path / "tiny.md").read_text()
    assert "bf16 autocast vs fp32" in md and "M2 / ModernBERT" in md
