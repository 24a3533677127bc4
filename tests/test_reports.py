"""What a newcomer's first runs show (issue 23): reports that say which model ran on what (the start model's size
from its config, max_duration, subsets, seeds), an average compared like with like, and ``--help`` of every console
script answered before torch is imported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PUBLISHED_80M = {"mnli_m": 78.4, "mnli_mm": 78.6, "mnli": 78.5, "rte": 68.5, "qnli": 84.6, "qqp": 86.7,
                 "sst2": 92.0, "stsb": 86.3, "cola": 53.0, "mrpc": 89.8, "average": 79.9}


def test_preset_of_names_the_size_by_its_shape():
    from transformers import BertConfig

    from m2bert.config import M2BertConfig, preset_of

    assert preset_of(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=30528)) == "m2-bert-tiny"
    assert preset_of(M2BertConfig.from_preset("m2-bert-base-80m", max_length=2048)) == "m2-bert-base-80m"
    assert preset_of(M2BertConfig.from_preset("m2-bert-tiny", num_hidden_layers=3)) == "custom M2 (d=64, L=3)"
    assert preset_of(BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2)) == "BERT (d=128, L=2)"


def _jobs() -> list[dict]:
    return [{"task": "rte", "seed": 19, "metrics": {"validation": {"accuracy": 0.5}}},
            {"task": "rte", "seed": 8364, "metrics": {"validation": {"accuracy": 0.6}}},
            {"task": "sst2", "seed": 19, "metrics": {"validation": {"accuracy": 0.8}}},
            {"task": "cola", "seed": 19, "metrics": {"validation": {"matthews_correlation": 0.1}}}]


SETTINGS = {"start_model": "m2-bert-tiny", "start": "runs/x/hf", "start_kind": "hf", "recipe": "m2-bert-base-80m",
            "max_duration": "20ba", "train_subset": 256, "eval_subset": None,
            "seeds": {"rte": [19, 8364], "sst2": [19], "cola": [19]}}


def test_results_carry_their_settings_and_compare_like_with_like(tmp_path, monkeypatch):
    """results.md/.json and the chart name the start model, duration, subsets and seeds; the published average
    beside a 3-task mean is the published mean over those 3 tasks (was: the paper's 8-task 79.9)."""
    from m2bert.glue import results

    charted = {}

    def grouped_bars(ax, groups, series):
        charted.update(groups=groups, series=series, title=None)

    monkeypatch.setattr(results, "grouped_bars", grouped_bars)
    monkeypatch.setattr(results, "load_published", lambda path, size: PUBLISHED_80M)
    res = results.write_results(str(tmp_path), _jobs(), "m2-bert-base-80m", "tiny", plot=True, settings=SETTINGS)
    same_tasks = (68.5 + 92.0 + 53.0) / 3
    assert res["published_average_same_tasks"] == pytest.approx(same_tasks)
    assert charted["groups"][-1] == "GLUE avg (3 tasks)"
    assert dict((name, values[-1]) for name, values, _ in charted["series"])["published"] == pytest.approx(same_tasks)
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# GLUE dev results: tiny, on subsets (train 256 rows per task)\n")
    for line in ("- start model: m2-bert-tiny (hf: runs/x/hf)", "- max_duration: 20ba", "- train_subset: 256",
                 "- eval_subset: null (full dev sets)", "- seeds: rte 19, 8364; sst2 19; cola 19"):
        assert line in md, line
    published_row = next(line for line in md.splitlines() if line.startswith("| m2-bert-base-80m (published)"))
    assert published_row.endswith(f"| {results.fmt(same_tasks)} |") and "| 79.9 |" not in published_row
    assert "the paper's over all eight: 79.9" in md
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"] == SETTINGS


def test_all_eight_tasks_keep_the_papers_average():
    from m2bert.glue.results import GLUE_AVERAGE_TASKS, published_mean

    assert published_mean(PUBLISHED_80M, list(GLUE_AVERAGE_TASKS)) == 79.9
    assert published_mean({"average": 82.2}, ["rte"]) is None  # no per-task values published: no bar


def test_glue_cli_prints_the_table_once_quietly(sample_hf, sample_mds, tmp_path, monkeypatch, capsys):
    """Two tiny jobs through the console script: the results table once (it was logged and printed), no config
    dump or per-metric lines per job, and the reports name the start model (m2-bert-tiny, not the recipe's
    m2-bert-base-80m), the duration and the subsets; the fine-tuned card too."""
    from m2bert import cli
    from m2bert.glue.driver import main

    runs = tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", [
        "m2bert-glue", "glue=m2_bert_tiny", f"start.path={sample_hf}", f"data.source={sample_mds['raw'] / 'glue'}",
        "tasks=[sample-ss,sample-pair]", "train_subset=16", "eval_subset=32", "max_duration=2ba", "device=cpu",
        "save_final=all", "console_log_interval=1ba", f"run_root={runs}", "run_name=g"])
    monkeypatch.setattr(cli, "_task_started", False)
    capsys.readouterr()
    main()
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("| Model | sample-ss | sample-pair |") == 1, text[-3000:]
    assert "Config:" not in text and "Train time/batch" not in text
    assert len(text.splitlines()) < 60, text[-3000:]
    md = (runs / "g" / "results.md").read_text()
    assert md.startswith("# GLUE dev results: g, on subsets (train 16 rows, dev 32 rows per task)")
    assert "- start model: m2-bert-tiny (hf: " in md and "- max_duration: 2ba" in md
    assert (runs / "g" / "glue.png").stat().st_size > 0
    card = (runs / "g" / "jobs" / "sample-ss-seed19" / "final" / "README.md").read_text()
    assert card.startswith("# sample-ss-seed19: m2-bert-tiny fine-tuned on sample-ss, on subsets")
    assert "| max_duration | 2ba |" in card and "| train_subset | 16 |" in card


def test_progress_bar_follows_the_terminal(monkeypatch):
    from m2bert.pretrain import show_progress_bar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress_bar(None) is True and show_progress_bar(False) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress_bar(None) is False and show_progress_bar(True) is True


def _console_scripts() -> dict[str, str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_help_of_every_console_script_imports_no_torch():
    """``--help`` of each console script, in one fresh process: answered (exit 0, text) before torch, composer or
    transformers are imported (it took 12-16 s when ``import m2bert`` loaded them)."""
    code = (
        "import importlib, io, sys, contextlib\n"
        "scripts = dict(a.split('=', 1) for a in sys.argv[1:])\n"
        "for name, target in scripts.items():\n"
        "    module, func = target.split(':')\n"
        "    sys.argv = [name, '--help']\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            getattr(importlib.import_module(module), func)()\n"
        "        except SystemExit as e:\n"
        "            assert e.code in (0, None), (name, e.code)\n"
        "    assert len(out.getvalue()) > 100, (name, out.getvalue())\n"
        "heavy = sorted(m for m in ('torch', 'composer', 'transformers') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    scripts = [f"{name}={target}" for name, target in _console_scripts().items()]
    proc = subprocess.run([sys.executable, "-c", code, *scripts], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "heavy: []", proc.stdout[-2000:]


@pytest.mark.parametrize("first", ["import m2bert", "from m2bert.config import M2BertConfig",
                                   "from m2bert.model import M2BertModel"])
def test_auto_classes_know_m2bert_whatever_is_imported_first(first):
    """``import m2bert`` no longer loads torch, yet transformers' Auto* factories know our classes whether
    transformers is imported after m2bert or by the m2bert module imported first (m2bert.auto's waiting case)."""
    code = (f"{first}\nimport m2bert\nfrom transformers import AutoConfig, AutoModel\n"
            "config = AutoConfig.for_model('m2_bert', hidden_size=64, intermediate_size=256, num_hidden_layers=2)\n"
            "print(type(config).__name__, type(AutoModel.from_config(config)).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["M2BertConfig", "M2BertModel"]
