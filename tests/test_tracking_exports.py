"""Tracking and exports, end to end on the offline sample with W&B offline: the resolved config reaches
every logger (one W&B run for pretraining, one per GLUE job, grouped by the GLUE run), the console line
shows batch/total and the time left, and every Hugging Face export has a model card (GLUE's with labels)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2bert.train import builders
from tests.conftest import compose_glue, compose_pretrain


def _offline_runs(wandb_dir: Path) -> list[Path]:
    """The offline runs, once their record files are complete: ``wandb.finish`` returns before W&B's service
    process has flushed and closed a run's file (seen empty: "header is 0 bytes"); shutting the service down
    waits for that, as a process exit does for a user before ``wandb sync``."""
    import wandb

    wandb.teardown()
    return sorted(wandb_dir.glob("wandb/offline-run-*"))


def _read_run(run: Path) -> tuple[dict, str]:
    """An offline W&B run's config (every update merged) and group, read back from its record file."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    (path,) = run.glob("*.wandb")
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    config, group = {}, ""
    while (data := store.scan_data()) is not None:
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            group = record.run.run_group
        if kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({u.key: json.loads(u.value_json) for u in updates})
    return config, group


def test_duration_in_batches():
    assert builders.duration_in_batches("286720000sp", 4096) == "70000ba"
    assert builders.duration_in_batches("100sp", 16) == "100sp"  # not whole batches: unchanged
    assert builders.duration_in_batches("3ep", 16) == "3ep"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_wandb_offline_config_console_progress_and_model_cards(sample_mds, tmp_path, monkeypatch, capfd):
    pytest.importorskip("wandb")
    from transformers import AutoConfig

    from m2bert.glue.driver import run as glue
    from m2bert.pretrain import run as pretrain

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    pcfg = compose_pretrain([
        "model=m2_bert_tiny", "data=sample", f"data.local={sample_mds['mds']}",
        f"data.tokenizer={sample_mds['tokenizer']}", "global_train_batch_size=8",
        "impl.device_train_microbatch_size=8", "max_duration=24sp", "eval_interval=3ba", "eval_subset_num_batches=1",
        "save_interval=3ba", "console_log_interval=1ba", "logger=wandb", "logger.mode=offline",
        f"run_root={tmp_path}", "run_name=pre"])
    summary = pretrain(pcfg)
    console = capfd.readouterr()
    console_text = console.out + console.err
    assert "[batch=3/3]" in console_text  # 24 samples of 8 a batch: shown as batches, with the total
    assert "time/remaining_estimate" in console_text  # RuntimeEstimator: the time left

    (pre_run,) = _offline_runs(tmp_path)
    config, _ = _read_run(pre_run)
    assert config["model"]["preset"] == "m2-bert-tiny"
    assert config["data"]["local"] == str(sample_mds["mds"])  # resolved, not an interpolation
    assert config["max_duration"] == "24sp"

    card = (Path(summary["hf_export"]) / "README.md").read_text()
    assert "import m2bert" in card and "m2-bert-tiny" in card and "3 batches of 8 sequences" in card
    assert "eval MLM loss (batch 3)" in card

    cfg = compose_glue([
        "glue=m2_bert_tiny", f"start.path={summary['hf_export']}", f"data.source={sample_mds['raw'] / 'glue'}",
        "tasks=[sample-ss,sample-pair]", "train_subset=16", "eval_subset=32", "max_duration=2ba", "device=cpu",
        "save_final=all", "logger=wandb", "logger.mode=offline", f"run_root={tmp_path}", "run_name=glue-grouped",
    ])
    res = glue(cfg)
    glue_runs = [r for r in _offline_runs(tmp_path) if r != pre_run]
    assert len(glue_runs) == 2  # one W&B run per job
    for run_dir in glue_runs:
        config, group = _read_run(run_dir)
        assert group == "glue-grouped"  # the GLUE run's jobs are one W&B group
        assert config["glue"]["run_name"] == "glue-grouped" and config["glue"]["train_subset"] == 16
        assert config["job"]["task"] in ("sample-ss", "sample-pair")

    for job in res["jobs"]:
        final = Path(job["final_model"])
        labels = {"sample-ss": ["shuffled", "original"], "sample-pair": ["different", "same"]}[job["task"]]
        hf_config = AutoConfig.from_pretrained(final)
        assert [hf_config.id2label[i] for i in range(2)] == labels
        assert hf_config.label2id == {name: i for i, name in enumerate(labels)}
        card = (final / "README.md").read_text()
        assert job["task"] in card and "import m2bert" in card and "AutoModelForSequenceClassification" in card
        assert "validation accuracy" in card and "0 = " + labels[0] in card
    assert json.loads((Path(res["jobs"][0]["final_model"]) / "config.json").read_text())["id2label"]["1"] == \
        {"sample-ss": "original", "sample-pair": "same"}[res["jobs"][0]["task"]]
