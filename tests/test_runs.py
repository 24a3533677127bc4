"""Runs are never lost: no silent overwrite, a unique default run name, autoresume past a save killed
midway (to the same final weights and eval loss as an uninterrupted run), eval masks fixed per sample."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import compose_pretrain, tiny_pretrain_overrides
from safetensors.torch import load_file

from m2bert.options import ConfigError
from m2bert.train.runs import prepare_autoresume
from m2bert.train.schema import register

register()


def _overrides(sample_mds, run_root: Path, run_name: str) -> list[str]:
    return tiny_pretrain_overrides(sample_mds, run_root, run_name, settings={"global_train_batch_size": 8, "impl.device_train_microbatch_size": 8, "eval_subset_num_batches": 1,
                     "max_duration": "6ba", "eval_interval": "2ba", "save_interval": "2ba", "save_num_checkpoints_to_keep": -1})



@pytest.fixture(scope="module")
def straight(sample_mds, tmp_path_factory) -> dict:
    """One uninterrupted 6-batch run: checkpoints at 2, 4, 6; evaluations at 2, 4, 6."""
    from m2bert.pretrain import run

    root = tmp_path_factory.mktemp("runs")
    return {"root": root, "summary": run(compose_pretrain(_overrides(sample_mds, root, "straight")))}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links as their target's name) with its bytes: what a refused run must not change."""
    return {str(p.relative_to(root)): os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def test_rerun_refuses_to_overwrite_checkpoints(straight, sample_mds):
    from m2bert.pretrain import run

    folder = Path(straight["summary"]["checkpoints"])
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, straight["root"], "straight")))
    msg = str(err.value)
    assert "\n" not in msg and str(folder.parent) in msg and "autoresume=true" in msg and "overwrite=true" in msg, msg
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_rerun_with_another_save_folder_keeps_the_earlier_run(straight, sample_mds, tmp_path):
    """The guard covers the run folder (export, summary, checkpoints), not only the save folder: a rerun of the same
    run_name elsewhere used to pass it and replace hf/ and summary.json; autoresume=true continues only that run."""
    from m2bert.pretrain import run

    run_dir = straight["root"] / "straight"
    before = snapshot(run_dir)
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(ConfigError, match=rf"run folder {run_dir} already holds a run \(summary.json, hf, "
                                          r"checkpoints, loss.png\): continue it with autoresume=true, replace it with "
                                          r"overwrite=true"):
        run(compose_pretrain(_overrides(sample_mds, straight["root"], "straight") + [f"save_folder={elsewhere}"]))
    with pytest.raises(ConfigError, match=rf"autoresume=true: the run in {run_dir} keeps its checkpoints in "
                                          rf"{run_dir / 'checkpoints'}, not in save_folder={elsewhere}"):
        run(compose_pretrain(_overrides(sample_mds, straight["root"], "straight") +
                             [f"save_folder={elsewhere}", "autoresume=true"]))
    assert snapshot(run_dir) == before and not elsewhere.exists()


def test_autoresume_of_a_finished_run_is_one_line(straight, sample_mds, monkeypatch, capsys):
    """autoresume=true on a run that reached max_duration: one line saying it is complete and what to do (Composer's
    fit raised "The max_duration (6ba) is less than or equal to the elapsed training duration" with a traceback),
    before any training, and the finished run is left as it was."""
    from m2bert.pretrain import main
    from tests.test_cli_errors import _in_process, _one_line

    run_dir = straight["root"] / "straight"
    before = snapshot(run_dir)
    proc = _in_process(main, "m2bert-pretrain", _overrides(sample_mds, straight["root"], "straight") +
                       ["autoresume=true"], monkeypatch, capsys)
    assert _one_line(proc, "m2bert-pretrain").endswith(
        f"error: autoresume=true: the run in {run_dir} is complete (it has trained 6ba of max_duration=6ba): start a "
        f"new run with another run_name, or raise max_duration to train it further"), proc.stderr
    assert snapshot(run_dir) == before


def test_load_path_that_already_reached_max_duration_is_one_line(straight, sample_mds, monkeypatch, capsys):
    """load_path= a checkpoint that has trained max_duration already: one line saying no training would occur and
    what to do, before any training; the new run leaves no checkpoint behind."""
    from m2bert.pretrain import main
    from tests.test_cli_errors import _in_process, _one_line

    ckpt = Path(straight["summary"]["checkpoints"]) / "ep0-ba6-rank0.pt"
    assert ckpt.is_file(), sorted(p.name for p in ckpt.parent.iterdir())
    proc = _in_process(main, "m2bert-pretrain", _overrides(sample_mds, straight["root"], "from-finished") +
                       [f"load_path={ckpt}"], monkeypatch, capsys)
    assert _one_line(proc, "m2bert-pretrain").endswith(
        f"error: load_path={ckpt} has trained 6ba of max_duration=6ba, so no training would occur: raise "
        f"max_duration to train it further"), proc.stderr
    assert not list((straight["root"] / "from-finished").rglob("*.pt"))


def test_a_run_in_progress_keeps_its_folder(sample_mds, tmp_path, monkeypatch, capsys, caplog):
    """Two runs of one run_name at once: the second is refused in one line naming the lock and its holder, before
    anything is written; once the holder is gone (kill -9), its lock is taken over with a warning."""
    import signal
    import socket

    from m2bert.pretrain import main
    from tests.conftest import hold_lock
    from tests.test_cli_errors import _in_process, _one_line

    folder = tmp_path / "runs" / "busy"
    holder = hold_lock(folder)
    args = _overrides(sample_mds, tmp_path / "runs", "busy") + ["max_duration=2ba", "save_interval=2ba"]
    try:
        proc = _in_process(main, "m2bert-pretrain", args, monkeypatch, capsys)
        line = _one_line(proc, "m2bert-pretrain")
        assert f"{folder / 'run.lock'} is held by pid {holder.pid} on {socket.gethostname()}" in line, line
        assert sorted(p.name for p in folder.iterdir()) == ["run.lock"]  # nothing of the second run was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    monkeypatch.setattr(sys, "argv", ["m2bert-pretrain", *args])
    main()  # the holder is dead: this run takes its lock over, runs, and releases the lock at the end
    out = capsys.readouterr()
    assert f"{folder / 'run.lock'} was left by pid {holder.pid}" in caplog.text + out.out + out.err
    assert (folder / "summary.json").is_file() and not (folder / "run.lock").exists()


def test_default_run_name_is_unique(sample_mds, tmp_path):
    cfg = compose_pretrain([o for o in _overrides(sample_mds, tmp_path, "x") if not o.startswith("run_name=")])
    assert cfg.run_name.startswith("m2bert-pretrain-20") and len(cfg.run_name) == len("m2bert-pretrain-20250101-120000")


def test_resume_after_a_save_killed_midway_matches_uninterrupted(straight, sample_mds, tmp_path):
    """kill -9 while ep0-ba4 was being written: a truncated file, latest still at (or linking to) it.

    Autoresume sets the partial file aside, continues from ba2, and ends with the straight run's weights
    and eval curve (the eval at batch 2 comes from the checkpoint; those at 4 and 6 are the resumed run's), and
    its training-loss curve (batches 1-2 from the checkpoint).
    """
    from m2bert.pretrain import run

    src = Path(straight["summary"]["checkpoints"])
    folder = tmp_path / "resumed" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(src / "ep0-ba2-rank0.pt", folder / "ep0-ba2-rank0.pt")
    whole = (src / "ep0-ba4-rank0.pt").read_bytes()
    (folder / "ep0-ba4-rank0.pt").write_bytes(whole[: len(whole) // 3])  # what a kill in torch.save leaves
    os.symlink("ep0-ba4-rank0.pt", folder / "latest-rank0.pt")
    summary = run(compose_pretrain(_overrides(sample_mds, tmp_path, "resumed") + ["autoresume=true"]))
    assert (folder / "ep0-ba4-rank0.pt.partial-1").stat().st_size == len(whole) // 3  # set aside, not deleted
    assert summary["batches"] == 6 and [r["batch"] for r in summary["eval"]] == [2, 4, 6]
    a = {r["batch"]: r["loss"] for r in straight["summary"]["eval"]}
    b = {r["batch"]: r["loss"] for r in summary["eval"]}
    assert all(b[k] == pytest.approx(a[k], abs=1e-6) for k in (2, 4, 6)), (a, b)
    assert [r["batch"] for r in summary["train_loss"]] == list(range(1, 7))
    assert [r["loss"] for r in summary["train_loss"]] == pytest.approx(
        [r["loss"] for r in straight["summary"]["train_loss"]], abs=1e-5)
    wa = load_file(Path(straight["summary"]["hf_export"]) / "model.safetensors")
    wb = load_file(Path(summary["hf_export"]) / "model.safetensors")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)


def test_dangling_latest_is_repointed_or_refused(straight, tmp_path):
    src = Path(straight["summary"]["checkpoints"])
    folder = tmp_path / "ck"
    folder.mkdir()
    os.symlink("ep0-ba4-rank0.pt", folder / "latest-rank0.pt")  # its target never made it to disk
    with pytest.raises(ConfigError, match=r"latest-rank0\.pt points at ep0-ba4-rank0\.pt, which is missing"):
        prepare_autoresume(folder)
    shutil.copy(src / "ep0-ba2-rank0.pt", folder / "ep0-ba2-rank0.pt")
    assert prepare_autoresume(folder) == folder / "latest-rank0.pt"
    assert os.readlink(folder / "latest-rank0.pt") == "ep0-ba2-rank0.pt"
    # a complete checkpoint newer than latest (killed after the write, before the link): it is the one resumed
    shutil.copy(src / "ep0-ba6-rank0.pt", folder / "ep0-ba6-rank0.pt")
    prepare_autoresume(folder)
    assert os.readlink(folder / "latest-rank0.pt") == "ep0-ba6-rank0.pt"
    assert prepare_autoresume(tmp_path / "fresh") is None  # a first run of an autoresume command


def test_eval_masks_do_not_depend_on_earlier_passes(sample_mds):
    from m2bert.data.mlm import build_mlm_dataloader
    from m2bert.data.tokenizer import load_tokenizer

    loader = build_mlm_dataloader(local=str(sample_mds["mds"]), remote=None, split="val",
                                  tokenizer=load_tokenizer(sample_mds["tokenizer"]), max_seq_len=128, batch_size=16,
                                  mlm_probability=0.15, shuffle=False, seed=17, drop_last=False,
                                  remask_each_epoch=False)
    passes = [torch.cat([b["labels"] for b, _ in zip(loader, range(2))]) for _ in range(3)]
    assert torch.equal(passes[0], passes[1]) and torch.equal(passes[0], passes[2])
    assert (passes[0] != -100).any()
