"""bench/speed_report.py turns the committed benchmark JSONs into the table and plot: every measurement once, its
ratio and spread as the JSON has them, and a clear error when a JSON is missing."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JSONS = ("train_cpu_best.json", "throughput_cpu_best.json")


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
    assert f"| train 128 | BERT | {train['m2_best']} | {train['bert_best']} |" in md and f"**{train['ratio']:.2f}**" in md
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
    assert "goal (issues 11 and 24)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_report_names_the_cpu_and_refuses_to_hide_a_mix(tmp_path, caplog):
    """The machine label comes from the JSONs' recorded CPU; JSONs from two CPUs are labelled as a mix (ratios from
    different CPUs do not compare) and warned about."""
    for name in JSONS:
        shutil.copy(ROOT / "bench" / "results" / name, tmp_path / name)
    report = _report()
    cpu = json.loads((tmp_path / JSONS[0]).read_text())["machine"]
    report.main(["--results", str(tmp_path)])
    assert f"CPU: {cpu}, " in (tmp_path / "speed_cpu.md").read_text()
    other = json.loads((tmp_path / JSONS[1]).read_text())
    other["machine"] = "Some Other CPU"
    (tmp_path / JSONS[1]).write_text(json.dumps(other))
    report.main(["--results", str(tmp_path)])
    md = (tmp_path / "speed_cpu.md").read_text()
    assert "MIXED, not comparable" in md and "Some Other CPU" in md and cpu in md
    assert "measured on different CPUs" in caplog.text


def _modernbert_json() -> dict:
    """What bench/throughput.py --reference modernbert --rss writes, at two lengths: side by side, and M2 alone."""
    machine = json.loads((ROOT / "bench" / "results" / JSONS[0]).read_text())["machine"]
    return {"date": "2026-12-06 10:00 UTC", "threads": 2, "machine": machine, "dtype": "fp32", "reference": "modernbert", "repeats": 3,
            "lengths": {
                "512": {"m2_best": "eager_bf16", "m2_tok_per_ms": 1.5, "m2_eager_tok_per_ms": 0.8,
                        "m2_eager_bf16_tok_per_ms": 1.5, "modernbert_best": "eager", "modernbert_tok_per_ms": 1.0,
                        "modernbert_eager_tok_per_ms": 1.0, "modernbert_eager_bf16_tok_per_ms": 0.9, "ratio": 1.5,
                        "ratio_per_round": {"min": 1.4, "median": 1.5, "max": 1.62}, "m2_peak_rss_mb": 900.0,
                        "modernbert_peak_rss_mb": 1500.0},
                "32768": {"m2_best": "eager_bf16", "m2_tok_per_ms": 0.3, "m2_tok_per_s": 300.0,
                          "modernbert": "not run: modernbert takes at most 8192 positions",
                          "m2_embed_peak_rss_mb": 12345.0}}}


def test_modernbert_rows_goals_and_readme(tmp_path):
    """ModernBERT beside BERT: its rows name each side's best setting, the spread and its rounds, issue 24's goals
    (1.3 at 512) and both peak RSS; M2 alone at 32768 has no ratio; README's block is replaced, the rest kept."""
    for name in JSONS:
        shutil.copy(ROOT / "bench" / "results" / name, tmp_path / name)
    (tmp_path / "throughput_cpu_modernbert.json").write_text(json.dumps(_modernbert_json()))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- speed_report: start -->\nold table\n<!-- speed_report: end -->\noutro\n")
    _report().main(["--results", str(tmp_path), "--readme", str(readme)])
    md = (tmp_path / "speed_cpu.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| fwd 512 vs ModernBERT |"))
    assert "| ModernBERT | eager_bf16 | eager | 1500 | 1000 | **1.50** | 1.40–1.62 (3) | 1.3 | 900 / 1500 |" in row
    alone = next(line for line in md.splitlines() if line.startswith("| fwd 32768 vs ModernBERT |"))
    assert "M2 alone" in alone and "not run: modernbert takes at most 8192 positions" in alone and "12345" in alone
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    assert row in text and "| fwd 8192 | BERT |" in text


def test_readme_without_markers_is_named(tmp_path, capsys):
    for name in JSONS:
        shutil.copy(ROOT / "bench" / "results" / name, tmp_path / name)
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(SystemExit) as exc:
        _report().main(["--results", str(tmp_path), "--readme", str(tmp_path / "README.md")])
    assert exc.value.code == 2 and "README.md has no <!-- speed_report: start -->" in capsys.readouterr().err
    assert not (tmp_path / "speed_cpu.md").exists()  # refused before anything was written
