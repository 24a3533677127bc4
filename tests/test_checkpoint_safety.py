"""A checkpoint whose pickle carries a payload is refused, with one line, on every route that reads one
(GLUE composer start in both pickle formats, load_path, autoresume), before anything unpickles it;
our own checkpoints still load."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from tests.conftest import compose_pretrain, tiny_pretrain_overrides

from m2bert.options import ConfigError
from m2bert.train.checkpoint_safety import load_checkpoint_safely
from m2bert.train.schema import register

register()


def _overrides(sample_mds, run_root: Path, run_name: str) -> list[str]:
    return tiny_pretrain_overrides(sample_mds, run_root, run_name, settings={"global_train_batch_size": 8, "impl.device_train_microbatch_size": 8, "eval_subset_num_batches": 1,
                     "max_duration": "2ba", "eval_interval": "2ba", "save_interval": "2ba"})



@pytest.fixture(scope="module")
def ours(sample_mds, tmp_path_factory) -> dict[str, Path]:
    """One tiny pretraining run: a genuine checkpoint of ours and the HF export beside it."""
    from m2bert.pretrain import run

    root = tmp_path_factory.mktemp("ckpt")
    summary = run(compose_pretrain(_overrides(sample_mds, root, "genuine")))
    return {"root": root, "ckpt": Path(summary["checkpoints"]) / "ep0-ba2-rank0.pt", "hf": Path(summary["hf_export"])}


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil(ours: dict[str, Path], path: Path, marker: Path, legacy: bool = False) -> Path:
    """Our genuine checkpoint with a payload added: it looks right and would load without the check."""
    ckpt = load_checkpoint_safely(ours["ckpt"])
    ckpt["state"]["metadata"]["note"] = _Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


def _one_line_refusal(err: pytest.ExceptionInfo, path: Path, key: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "exec" in msg and f"{key}=true" in msg, msg


def test_our_checkpoint_passes_and_holds_only_allowed_types(ours):
    ckpt = load_checkpoint_safely(ours["ckpt"])
    assert int(ckpt["state"]["timestamp"]["Timestamp"]["batch"]) == 2
    assert any(k.startswith("model.bert.") for k in ckpt["state"]["model"])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ours["ckpt"]))  # numpy etc.: hence the allowlist


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_glue_composer_start_refuses_payload(ours, tmp_path, legacy):
    from m2bert.glue.start import resolve_start

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "run" / "checkpoints" / "ep0-ba2-rank0.pt", marker, legacy)
    with pytest.raises(ConfigError) as err:
        resolve_start("composer", str(evil), config=str(ours["hf"]))
    assert not marker.exists()
    _one_line_refusal(err, evil, "start.trust_checkpoint")
    # the genuine checkpoint still starts a GLUE job, loaded weights-only
    start = resolve_start("composer", str(ours["ckpt"]), config=str(ours["hf"]))
    assert any(k.startswith("bert.") for k in start.state)


def test_glue_driver_refuses_payload_before_any_job(ours, sample_mds, tmp_path):
    from m2bert.glue.driver import run
    from tests.conftest import compose_glue

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "evil.pt", marker)
    cfg = compose_glue(["glue=m2_bert_tiny", "start.kind=composer", f"start.path={evil}", f"start.config={ours['hf']}",
                        f"data.source={sample_mds['raw'] / 'glue'}", "tasks=[sample-ss]", "max_duration=1ba",
                        "device=cpu", f"run_root={tmp_path}", "run_name=g"])
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert not marker.exists()
    _one_line_refusal(err, evil, "start.trust_checkpoint")


def test_load_path_refuses_payload(ours, sample_mds, tmp_path):
    from m2bert.pretrain import run

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "evil.pt", marker)
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "lp") + [f"load_path={evil}"]))
    assert not marker.exists()
    _one_line_refusal(err, evil, "trust_checkpoint")


def test_autoresume_refuses_payload_placed_as_latest(ours, sample_mds, tmp_path):
    from m2bert.pretrain import run

    marker = tmp_path / "marker"
    latest = _evil(ours, tmp_path / "ar" / "checkpoints" / "latest-rank0.pt", marker)
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "ar") + ["autoresume=true"]))
    assert not marker.exists()
    _one_line_refusal(err, latest, "trust_checkpoint")
    # the same through a latest link to a payload named like one of our checkpoints
    os.unlink(latest)
    named = _evil(ours, latest.with_name("ep0-ba4-rank0.pt"), marker)
    os.symlink(named.name, latest)
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "ar") + ["autoresume=true"]))
    assert not marker.exists()
    _one_line_refusal(err, named, "trust_checkpoint")


def test_genuine_checkpoint_resumes(ours, sample_mds, tmp_path):
    """Our own checkpoint passes the check on the autoresume route and training continues from it."""
    from m2bert.pretrain import run

    folder = tmp_path / "cont" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(ours["ckpt"], folder / ours["ckpt"].name)
    os.symlink(ours["ckpt"].name, folder / "latest-rank0.pt")
    summary = run(compose_pretrain(_overrides(sample_mds, tmp_path, "cont") + ["autoresume=true", "max_duration=3ba",
                                                                       "export_hf=false"]))
    assert summary["batches"] == 3


def test_trust_checkpoint_skips_the_check_with_a_warning(ours, tmp_path, caplog):
    from m2bert.train.checkpoint_safety import warn_trusted

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "evil.pt", marker)
    with caplog.at_level("WARNING"):
        warn_trusted(evil)
    assert "without checks" in caplog.text and not marker.exists()  # skipped, not loaded


def test_checkpoint_of_the_earlier_wrapper_loads(ours, sample_mds, tmp_path):
    """Checkpoints written before the wrapper had one child also hold encoder.* / head.* copies of
    model.bert.* / model.mlm_head.*: load_path still loads them (strictly) and training continues."""
    from m2bert.pretrain import run

    ckpt = load_checkpoint_safely(ours["ckpt"])
    model_state = ckpt["state"]["model"]
    assert all(k.startswith("model.") for k in model_state)  # ours: the model's keys only
    for key, value in list(model_state.items()):
        for prefix, alias in (("model.bert.", "encoder."), ("model.mlm_head.", "head.")):
            if key.startswith(prefix):
                model_state[alias + key[len(prefix):]] = value.clone()
    legacy = tmp_path / "legacy.pt"
    torch.save(ckpt, legacy)
    summary = run(compose_pretrain(_overrides(sample_mds, tmp_path, "legacy") + [f"load_path={legacy}", "max_duration=3ba",
                                                                         "export_hf=false"]))
    assert summary["batches"] == 3
