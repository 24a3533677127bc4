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


# The released retrieval models' Hugging Face layout: config.json with the original's fields, weights without
# Composer's "model." prefix, an optional BertPooler.
def _retrieval_dir(tmp_path, original, weights="model.safetensors", use_cls_token=True, pooler=None):
    import json

    from safetensors.torch import save_file

    cfg, state = original
    out = tmp_path / "m2-retrieval"
    out.mkdir()
    tensors = {k[len("model."):]: v.clone() for k, v in state["state"]["model"].items()}
    if pooler is not None:
        tensors["bert.pooler.dense.weight"], tensors["bert.pooler.dense.bias"] = pooler
    if weights.endswith(".safetensors"):
        # safetensors refuses tensors that share memory: the tied decoder is saved as its own copy.
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / weights))
    else:
        torch.save(tensors, out / weights)
    fields = {k: v for k, v in cfg.items() if k not in ("id2label", "label2id", "dtype")}
    fields.update(model_type="m2_bert", architectures=["M2BertForSequenceClassification"],
                  auto_map={"AutoConfig": "configuration_bert.BertConfig"},
                  gather_sentence_embeddings=True, use_cls_token=use_cls_token, use_normalized_embeddings=False)
    (out / "config.json").write_text(json.dumps(fields))
    return out


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_released_directory_layout_loads(tmp_path, original, weights):
    from m2bert import M2BertModel

    io = torch.load(shared_path("golden", "m2_tiny_golden.io.pt"), weights_only=True)
    path = _retrieval_dir(tmp_path, original, weights)
    mlm_dir = M2BertForMaskedLM.from_original_checkpoint(path).eval()
    mlm_file = M2BertForMaskedLM.from_original_checkpoint(str(shared_path("golden", "m2_tiny_golden.pt")), io["config"]).eval()
    encoder = M2BertModel.from_original_checkpoint(path).eval()  # the MLM head in the file is skipped
    assert encoder.config.sentence_embedding and encoder.config.pooling == "cls" and encoder.pooler is None
    inputs = dict(attention_mask=io["attention_mask"], token_type_ids=io["token_type_ids"])
    with torch.no_grad():
        a, b = mlm_dir(io["input_ids"], **inputs).logits, mlm_file(io["input_ids"], **inputs).logits
        out = encoder(io["input_ids"], **inputs)
    assert torch.equal(a, b)
    assert (a - io["mlm_logits"]).abs().max().item() <= 1e-4
    assert (out.last_hidden_state - io["last_hidden_state"]).abs().max().item() <= 1e-4
    # use_cls_token=True: the embedding is the raw [CLS] state, as the original's gather_sentence_embeddings.
    torch.testing.assert_close(out.sentence_embedding, out.last_hidden_state[:, 0])


def test_released_directory_with_pooler(tmp_path, original):
    """use_cls_token=False: the original returns its BertPooler's output, tanh(dense([CLS]))."""
    from m2bert import M2BertModel

    io = torch.load(shared_path("golden", "m2_tiny_golden.io.pt"), weights_only=True)
    gen = torch.Generator().manual_seed(0)
    pooler = (torch.randn(64, 64, generator=gen) * 0.1, torch.randn(64, generator=gen) * 0.1)
    path = _retrieval_dir(tmp_path, original, use_cls_token=False, pooler=pooler)
    encoder = M2BertModel.from_original_checkpoint(path).eval()
    assert encoder.config.embedding_pooler and torch.equal(encoder.pooler.weight, pooler[0])
    with torch.no_grad():
        emb = encoder.embed(io["input_ids"], io["attention_mask"], io["token_type_ids"])
    expected = torch.tanh(io["last_hidden_state"][:, 0] @ pooler[0].T + pooler[1])
    assert (emb - expected).abs().max().item() <= 1e-4
    # The classifier takes the same pooler into its head.
    clf = M2BertForSequenceClassification.from_original_checkpoint(path)
    assert torch.equal(clf.head.pooler.weight, pooler[0])


def test_padding_invariant_on_request(tmp_path, original):
    from m2bert import M2BertModel

    path = _retrieval_dir(tmp_path, original)
    model = M2BertModel.from_original_checkpoint(path, padding_invariant=True).eval()
    assert model.config.padding_invariant is True
    ids = torch.randint(5, 1024, (1, 10))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        short = model.embed(ids, mask)
        padded = model.embed(torch.nn.functional.pad(ids, (0, 40)), torch.nn.functional.pad(mask, (0, 40)))
    torch.testing.assert_close(padded, short, rtol=1e-4, atol=1e-5)


def test_directory_without_weights_or_config(tmp_path, original):
    from m2bert import M2BertModel

    path = _retrieval_dir(tmp_path, original)
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no weights: expected model\.safetensors or pytorch_model\.bin"):
        M2BertModel.from_original_checkpoint(path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
        M2BertModel.from_original_checkpoint(path)


def test_file_without_config_is_refused(original):
    with pytest.raises(ValueError, match="config is required"):
        M2BertForMaskedLM.from_original_checkpoint(str(shared_path("golden", "m2_tiny_golden.pt")))
