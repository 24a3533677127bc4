"""bench/speed_report.py turns the committed benchmark JSONs into the table and plot: every measurement once, its
ratio and spread as the JSON has them, and a clear error when a JSON is missing."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JSONS = ("train_cpu_best.json", "throughput_cpu_best.json", "throughput_cpu_8192_eager.json")


def _report():
    spec = importlib.util.spec_from_file_location("bench_speed_report", ROOT / "bench" / "speed_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_matches_the_jsons(tmp_path):
    for name in JSONS:
        shutil.copy(ROOT / "bench" / "results" / name, tmp_path / name)
    _report().main(["--results", str(tmp_path)])
    md = (tmp_path / "speed_cpu.md").read_text()
    assert (tmp_path / "speed_cpu.png").stat().st_size > 0
    train = json.loads((tmp_path / JSONS[0]).read_text())
    assert f"| train 128 | {train['m2_best']} | {train['bert_best']} |" in md and f"**{train['ratio']:.2f}**" in md
    for name in JSONS[1:]:
        for length, row in json.loads((tmp_path / name).read_text())["lengths"].items():
            line = next(line for line in md.splitlines() if line.startswith(f"| fwd {length} |"))
            assert f"**{row['ratio']:.2f}**" in line and f"{row['ratio_per_round']['min']:.2f}" in line


def test_missing_json_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _report().main(["--results", str(tmp_path)])
    assert exc.value.code == 2 and "train_cpu_best.json not found" in capsys.readouterr().err


def test_chart_reads_alone(tmp_path):
    """Title with what is compared, the machine, threads, precision and date; each bar's value; goals in the legend."""
    report = _report()
    table = report.rows(ROOT / "bench" / "results", JSONS[0], list(JSONS[1:]))
    fig = report.plot(table, "CPU: test machine", tmp_path / "speed.png")
    ax = fig.axes[0]
    title = ax.get_title()
    assert "M2-BERT-base (80M) vs BERT-base" in title and "CPU: test machine" in title
    threads = json.loads((ROOT / "bench" / "results" / JSONS[0]).read_text())["threads"]
    assert f"{threads} threads" in title and "fp32" in title and table[0]["date"][:10] in title
    texts = [t.get_text() for t in ax.texts]
    assert all(f"{r['ratio']:.2f}×" in texts for r in table)
    assert "goal (issue 11)" in [t.get_text() for t in ax.get_legend().get_texts()]
