"""Bad checkpoints get errors that name the problem, before any heavy work."""
import pickle

import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM, M2BertForSequenceClassification
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def original():
    io = torch.load(shared_path("golden", "m2_tiny_golden.io.pt"), weights_only=True)
    state = torch.load(shared_path("golden", "m2_tiny_golden.pt"), weights_only=True)
    return io["config"], state


def _save(tmp_path, obj, name="ckpt.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_unknown_key_is_listed(tmp_path, original):
    cfg, state = original
    model_state = dict(state["state"]["model"])
    model_state["model.bert.encoder.layer.0.attention.mystery.weight"] = torch.zeros(1)
    path = _save(tmp_path, {"state": {"model": model_state}})
    with pytest.raises(ValueError, match="unknown keys.*mystery"):
        M2BertForMaskedLM.from_original_checkpoint(path, cfg)


def test_missing_key_is_listed(tmp_path, original):
    cfg, state = original
    model_state = {k: v for k, v in state["state"]["model"].items() if "layer.1.mlp.wo.bias" not in k}
    path = _save(tmp_path, {"state": {"model": model_state}})
    with pytest.raises(ValueError, match=r"missing keys.*layers\.1\.dimension_mixer\.wo\.bias"):
        M2BertForMaskedLM.from_original_checkpoint(path, cfg)


def test_wrong_config_is_a_shape_error(original):
    cfg, _ = original
    wrong = M2BertConfig.from_original(cfg, hidden_size=32, intermediate_size=128)
    with pytest.raises(ValueError, match="shape mismatch"):
        M2BertForMaskedLM.from_original_checkpoint(str(shared_path("golden", "m2_tiny_golden.pt")), wrong)


def test_missing_and_empty_files(tmp_path, original):
    cfg, _ = original
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        M2BertForMaskedLM.from_original_checkpoint(str(tmp_path / "nope.pt"), cfg)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        M2BertForMaskedLM.from_original_checkpoint(str(empty), cfg)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_arbitrary_pickles_are_refused(tmp_path, original):
    cfg, _ = original
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state": {"model": Payload()}}, f)
    with pytest.raises(ValueError, match="weights-only"):
        M2BertForMaskedLM.from_original_checkpoint(str(path), cfg)


def test_mlm_checkpoint_into_classifier(original):
    cfg, _ = original
    clf = M2BertForSequenceClassification.from_original_checkpoint(
        str(shared_path("golden", "m2_tiny_golden.pt")), M2BertConfig.from_original(cfg, num_labels=2)
    )
    ref = M2BertForMaskedLM.from_original_checkpoint(str(shared_path("golden", "m2_tiny_golden.pt")), cfg)
    torch.testing.assert_close(clf.bert.layers[1].dimension_mixer.wo.weight, ref.bert.layers[1].dimension_mixer.wo.weight)


def test_callers_config_is_left_unchanged(original):
    """Loading sets padding_invariant=False (to reproduce the original) on a copy, not on the caller's config."""
    cfg, _ = original
    config = M2BertConfig.from_original(cfg, padding_invariant=True)
    model = M2BertForMaskedLM.from_original_checkpoint(str(shared_path("golden", "m2_tiny_golden.pt")), config)
    assert model.config.padding_invariant is False
    assert config.padding_invariant is True and model.config is not config
