"""The GLUE driver end to end on CPU (acceptance 1, 4): a tiny model, ../shared's GLUE folders (train
subsets, full dev sets), the MNLI-start chain with WNLI standing in for MNLI (absent here), results files
and table; the three starting-checkpoint kinds; the job queue with two workers."""
from __future__ import annotations

import csv
import json

import pytest

from m2bert.glue.driver import run
from m2bert.glue.results import fmt
from m2bert.glue.schema import register
from tests.conftest import compose_glue, compose_pretrain, shared_path

register()

DEV_ROWS = {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "rte": 277, "wnli": 71}
METRICS = {"cola": ["matthews_correlation"], "sst2": ["accuracy"], "mrpc": ["f1", "accuracy"],
           "stsb": ["pearson", "spearmanr"], "rte": ["accuracy"], "wnli": ["accuracy"]}


def test_end_to_end_with_chain(tiny_hf, tmp_path):
    """Five GLUE tasks + a stand-in MNLI; RTE, MRPC, STS-B start from the stand-in's final model."""
    glue = shared_path("data", "glue")
    cfg = compose_glue([
        "glue=m2_bert_tiny", f"start.path={tiny_hf}", f"data.source={glue}", "tasks=[cola,sst2,mrpc,stsb,rte]",
        "chain.source_task=wnli", "train_subset=64", "max_duration=3ba", "data.pad_to_max_length=false",
        "glue.sst2.pooling=mean", "save_final=all", f"run_root={tmp_path}", "run_name=e2e", "console_log_interval=100ba",
    ])
    res = run(cfg)
    run_dir = tmp_path / "e2e"
    for f in ("results.json", "results.csv", "results.md", "glue.png"):
        assert (run_dir / f).stat().st_size > 0, f
    assert res["rounds"] == {"1": ["wnli", "cola", "sst2"], "2": ["mrpc", "stsb", "rte"]}
    jobs = res["jobs"]
    assert [(j["task"], j["seed"]) for j in jobs] == [("wnli", 19), ("cola", 19), ("sst2", 19), ("mrpc", 19),
                                                      ("stsb", 19), ("rte", 19), ("rte", 8364)]
    source = str(run_dir / "jobs" / "wnli-seed19" / "final")
    for j in jobs:
        assert list(j["metrics"]["validation"]) == METRICS[j["task"]]
        assert j["eval_rows"] == {"validation": DEV_ROWS[j["task"]]}  # full dev sets
        assert j["train_rows"] == 64 and j["batches"] == 3
        assert j["start"]["path"] == (source if j["task"] in ("mrpc", "stsb", "rte") else str(tiny_hf))
        for v in j["metrics"]["validation"].values():
            assert -1.0 <= v <= 1.0
    # pooling is a per-task setting: SST-2 ran with mean pooling, the rest with cls
    for task, pooling in (("sst2", "mean"), ("cola", "cls"), ("rte", "cls")):
        config = json.loads((run_dir / "jobs" / f"{task}-seed19" / "final" / "config.json").read_text())
        assert config["pooling"] == pooling, task
    # aggregation: RTE over its two seeds; GLUE average over the five GLUE tasks run (WNLI apart)
    rte = [100 * j["metrics"]["validation"]["accuracy"] for j in jobs if j["task"] == "rte"]
    assert res["tasks"]["rte"]["score"]["mean"] == pytest.approx(sum(rte) / 2)
    assert res["glue_average_tasks"] == ["rte", "sst2", "stsb", "cola", "mrpc"]
    assert res["glue_average"] == pytest.approx(sum(res["tasks"][t]["score"]["mean"] for t in res["glue_average_tasks"]) / 5)
    table = (run_dir / "results.md").read_text()
    assert "| Model | MNLI (m/mm) | RTE | QNLI | QQP | SST-2 | STS-B | CoLA | MRPC | GLUE avg |" in table
    assert "| m2-bert-base-80m (published) | 78.4 / 78.6 | 68.5 |" in table  # the package's copy
    ours = next(line for line in table.splitlines() if line.startswith("| e2e |"))  # labelled by the run name
    assert ours.endswith(f"{fmt(res['glue_average'])} |") and ours.count("–") == 3  # MNLI, QNLI, QQP not run
    # the paper's metric set: MRPC's score is its F1, STS-B's its Spearman; the rest stays in the detail table
    mrpc = next(j for j in jobs if j["task"] == "mrpc")["metrics"]["validation"]
    assert res["tasks"]["mrpc"]["score"]["mean"] == pytest.approx(100 * mrpc["f1"])
    stsb = next(j for j in jobs if j["task"] == "stsb")["metrics"]["validation"]
    assert res["tasks"]["stsb"]["score"]["mean"] == pytest.approx(100 * stsb["spearmanr"])
    assert f"| {fmt(100 * mrpc['f1'])} |" in ours
    assert "| mrpc | 19 | accuracy (not in score) |" in table and "| stsb | 19 | pearson (not in score) |" in table
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert {(r["task"], r["metric"]) for r in rows if r["level"] == "job"} >= {
        ("mrpc", "f1"), ("mrpc", "accuracy"), ("stsb", "pearson"), ("stsb", "spearmanr"), ("cola", "matthews_correlation")}
    assert [r for r in rows if r["level"] == "glue"][0]["n"] == "5"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["tasks"]["rte"]["seeds"] == [19, 8364] and "median" in saved["tasks"]["rte"]["score"]


def test_composer_start_through_the_job_queue(sample_mds, tmp_path):
    """Start from our own Composer checkpoint (pretraining's); two workers share the queue (ids 0, 1 on CPU)."""
    from m2bert.pretrain import run as pretrain

    pcfg = compose_pretrain([
        "model=m2_bert_tiny", "data=sample", f"data.local={sample_mds['mds']}", f"data.tokenizer={sample_mds['tokenizer']}",
        "global_train_batch_size=8", "impl.device_train_microbatch_size=8", "max_duration=2ba", "eval_interval=2ba",
        "eval_subset_num_batches=1", "save_interval=2ba", f"run_root={tmp_path}", "run_name=pre"])
    summary = pretrain(pcfg)
    cfg = compose_glue([
        "glue=m2_bert_tiny", "start.kind=composer", f"start.path={summary['checkpoints']}",
        f"data.source={sample_mds['raw'] / 'glue'}", "tasks=[sample-ss,sample-pair]",
        "train_subset=32", "eval_subset=64", "max_duration=2ba", "device=cpu", "gpus=[0,1]", "execution=queue",
        f"run_root={tmp_path}", "run_name=queue",
    ])
    res = run(cfg)
    assert [(j["task"], j["seed"]) for j in res["jobs"]] == [("sample-ss", 19), ("sample-pair", 19)]
    assert all(j["start"]["kind"] == "composer" and j["start"]["path"].endswith(".pt") for j in res["jobs"])
    assert all((tmp_path / "queue" / "jobs" / n / "log.txt").exists() for n in ("sample-ss-seed19", "sample-pair-seed19"))
    assert set(res["tasks"]["sample-pair"]["metrics"]) == {"f1", "accuracy"}
    assert res["glue_average"] is None and "| queue | " in res["table"]
    assert "MNLI (m/mm)" not in res["table"]  # no paper task ran: only the other-tasks table


def test_original_checkpoint_end_to_end(sample_mds, tmp_path):
    """An original M2-BERT checkpoint (the golden tiny one: vocab 1024, length 64) with a 1024-token tokenizer."""
    import glob

    from m2bert.data.tokenizer import train_wordpiece

    tok = train_wordpiece(sorted(glob.glob(str(sample_mds["raw"] / "c4" / "en" / "*.json"))), tmp_path / "tok1024", 1024)
    cfg = compose_glue([
        "glue=m2_bert_tiny", "start.kind=original", f"start.path={shared_path('golden', 'm2_tiny_golden.pt')}",
        f"start.config={shared_path('golden', 'm2_tiny_golden.io.pt')}", f"start.tokenizer={tok}",
        f"data.source={sample_mds['raw'] / 'glue'}", "data.max_seq_len=64", "tasks=[sample-ss]", "train_subset=32",
        "eval_subset=64", "max_duration=2ba", f"run_root={tmp_path}", "run_name=orig",
    ])
    res = run(cfg)
    (job,) = res["jobs"]
    assert job["start"]["kind"] == "original" and job["eval_rows"] == {"validation": 64}
    assert set(job["metrics"]["validation"]) == {"matthews_correlation", "accuracy"}


def test_chain_follows_the_configured_source(sample_mds, tmp_path):
    """``start_from: mnli`` means the chain source, whatever ``chain.source_task`` names: here SAMPLE-SS, not
    selected, runs first (one seed) and SAMPLE-PAIR starts from its final model, kept even with save_final=none."""
    from m2bert import M2BertConfig, M2BertForMaskedLM
    from m2bert.data.tokenizer import load_tokenizer

    hf = tmp_path / "hf"
    M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=2048)).save_pretrained(hf)
    load_tokenizer(sample_mds["tokenizer"]).save_pretrained(hf)
    cfg = compose_glue([
        "glue=m2_bert_tiny", f"start.path={hf}", f"data.source={sample_mds['raw'] / 'glue'}", "tasks=[sample-pair]",
        "glue.sample_pair.start_from=mnli", "chain.source_task=sample_ss", "glue.sample_ss.seeds=[19,717]",
        "save_final=none", "train_subset=16", "eval_subset=32", "max_duration=2ba", "data.pad_to_max_length=false",
        "device=cpu", "plot=false", f"run_root={tmp_path}", "run_name=chain",
    ])
    res = run(cfg)
    source = tmp_path / "chain" / "jobs" / "sample-ss-seed19" / "final"
    assert res["rounds"] == {"1": ["sample-ss"], "2": ["sample-pair"]} and res["chain_source"] == "sample-ss"
    assert [(j["task"], j["seed"], j["round"]) for j in res["jobs"]] == [("sample-ss", 19, 1), ("sample-pair", 19, 2)]
    ss, pair = res["jobs"]
    assert ss["start"]["path"] == str(hf) and ss["final_model"] == str(source)
    assert pair["start"] == {"kind": "hf", "path": str(source)} and pair["final_model"] is None
    assert res["chain_checkpoint"] == str(source) and (source / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- reruns (issue 21)

def _tiny(sample_hf, sample_mds, root, *extra: str) -> list[str]:
    """Two tiny jobs (the sample's two tasks, 16 train rows, 2 batches, 32 dev rows) into ``<root>/g``."""
    return ["glue=m2_bert_tiny", f"start.path={sample_hf}", f"data.source={sample_mds['raw'] / 'glue'}",
            "tasks=[sample-ss,sample-pair]", "train_subset=16", "eval_subset=32", "max_duration=2ba", "device=cpu",
            "plot=false", "console_log_interval=100ba", f"run_root={root}", "run_name=g", *extra]


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def glue_straight(sample_hf, sample_mds, tmp_path_factory) -> dict:
    """An uninterrupted two-job run."""
    root = tmp_path_factory.mktemp("straight")
    return {"root": root, "results": run(compose_glue(_tiny(sample_hf, sample_mds, root)))}


def test_rerun_is_refused_unless_resumed_or_overwritten(glue_straight, sample_hf, sample_mds, tmp_path):
    """A changed setting used to replace results.json and the jobs' result.json silently (exit 0)."""
    from m2bert.options import ConfigError

    run_dir = glue_straight["root"] / "g"
    before = _files(run_dir)
    with pytest.raises(ConfigError, match=rf"run folder {run_dir} already holds a run \(results.json, jobs, "
                                          r".*continue it with resume=true, replace it with overwrite=true"):
        run(compose_glue(_tiny(sample_hf, sample_mds, glue_straight["root"], "glue.sample_ss.lr=2e-3")))
    with pytest.raises(ConfigError, match=r"resume=true: sample-ss-seed19 finished with recipe.lr=0.001 .* "
                                          r"this run has recipe.lr=0.002"):
        run(compose_glue(_tiny(sample_hf, sample_mds, glue_straight["root"], "glue.sample_ss.lr=2e-3", "resume=true")))
    assert _files(run_dir) == before  # byte for byte
    # overwrite=true: the earlier run is deleted first, then the new one runs (in a copy, the fixture stays)
    import shutil

    shutil.copytree(glue_straight["root"], tmp_path / "copy")
    (tmp_path / "copy" / "g" / "stray.txt").write_text("left by the earlier run")
    res = run(compose_glue(_tiny(sample_hf, sample_mds, tmp_path / "copy", "glue.sample_ss.lr=2e-3", "overwrite=true")))
    assert not (tmp_path / "copy" / "g" / "stray.txt").exists()
    assert [j["spec"]["recipe"]["lr"] for j in res["jobs"]] == [2e-3, 1e-3]


def test_resume_after_kill_reruns_only_unfinished_jobs(glue_straight, sample_hf, sample_mds, tmp_path, caplog):
    """kill -9 after the first job finished; resume=true reuses it, runs only the second, and the table is the
    uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    caplog.set_level("INFO", logger="m2bert.glue")
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "m2bert.glue.driver", *_tiny(sample_hf, sample_mds, tmp_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs = tmp_path / "g" / "jobs"
    first, second = jobs / "sample-ss-seed19" / "result.json", jobs / "sample-pair-seed19" / "result.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert first.exists() and not second.exists() and not (tmp_path / "g" / "results.json").exists()
    done = first.read_bytes()
    res = run(compose_glue(_tiny(sample_hf, sample_mds, tmp_path, "resume=true")))
    assert "resume: sample-ss-seed19 finished before" in caplog.text and "taken over" in caplog.text  # its lock too
    assert "resume: sample-pair-seed19" not in caplog.text and second.exists()
    assert first.read_bytes() == done  # reused, not rerun
    straight = glue_straight["results"]
    assert res["table"] == straight["table"]
    assert res["tasks"] == straight["tasks"] and [j["metrics"] for j in res["jobs"]] == \
        [j["metrics"] for j in straight["jobs"]]


def test_a_glue_run_folder_in_use_is_refused(sample_hf, sample_mds, tmp_path):
    import signal
    import socket

    from m2bert.options import ConfigError
    from tests.conftest import hold_lock

    holder = hold_lock(tmp_path / "g")
    try:
        with pytest.raises(ConfigError, match=rf"{tmp_path / 'g' / 'run.lock'} is held by pid {holder.pid} on "
                                              rf"{socket.gethostname()}"):
            run(compose_glue(_tiny(sample_hf, sample_mds, tmp_path)))
        assert [p.name for p in (tmp_path / "g").iterdir()] == ["run.lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
