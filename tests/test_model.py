"""Model behaviour: padding invariance, heads, param groups, Hugging Face round trip."""
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

import m2bert  # noqa: F401  (registers the Auto* classes)
from m2bert import M2BertConfig, M2BertForMaskedLM, M2BertForSequenceClassification, M2BertModel, param_groups


def tiny(**overrides) -> M2BertConfig:
    return M2BertConfig.from_preset("m2-bert-tiny", **overrides)


@pytest.mark.parametrize("impl", ["fft", "monarch"])
def test_padding_invariance(impl):
    config = tiny(max_length=512, long_conv_impl=impl)
    model = M2BertModel(config).eval()
    n = 37
    ids = torch.randint(5, config.vocab_size, (1, n))
    outs = []
    for total in (64, 512):
        padded = torch.zeros(1, total, dtype=torch.long)
        padded[:, :n] = ids
        mask = (torch.arange(total) < n).long()[None]
        with torch.no_grad():
            outs.append(model(padded, attention_mask=mask).last_hidden_state[:, :n])
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-5


def test_original_semantics_leak_padding():
    """With padding_invariant=False (the original), padding changes real tokens' states."""
    config = tiny(max_length=512, padding_invariant=False)
    model = M2BertModel(config).eval()
    ids = torch.randint(5, config.vocab_size, (1, 20))
    outs = []
    for total in (32, 256):
        padded = torch.zeros(1, total, dtype=torch.long)
        padded[:, :20] = ids
        with torch.no_grad():
            outs.append(model(padded, attention_mask=(padded > 0).long()).last_hidden_state[:, :20])
    assert (outs[0] - outs[1]).abs().max().item() > 1e-3


def test_input_longer_than_filter_is_a_clear_error():
    model = M2BertModel(tiny()).eval()
    with pytest.raises(ValueError, match="max_position_embeddings|long_conv_l_max"):
        model(torch.ones(1, 129, dtype=torch.long))


def test_mlm_loss_only_on_masked_positions():
    config = tiny(hidden_dropout_prob=0.0)
    model = M2BertForMaskedLM(config).eval()
    ids = torch.randint(5, config.vocab_size, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 7], labels[1, 8] = 11, 12, 13
    out = model(ids, labels=labels)
    assert out.logits.shape == (3, config.vocab_size)
    full = model(ids).logits.reshape(-1, config.vocab_size)
    sel = labels.reshape(-1) != -100
    ref = torch.nn.functional.cross_entropy(full[sel], labels.reshape(-1)[sel])
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(out.logits, full[sel])
    assert out.masked_positions.tolist() == sel.nonzero().squeeze(-1).tolist()
    assert out.masked_labels.tolist() == [11, 12, 13]  # the targets of those positions, for a trainer's metrics


def bert_tiny(**overrides):
    from transformers import BertConfig

    from m2bert.model.bert_baseline import BertBaselineForMaskedLM

    return BertBaselineForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                              intermediate_size=64, hidden_dropout_prob=0.0, **overrides)).eval()


def test_bert_baseline_decodes_only_masked_positions_with_transformers_loss():
    """The baseline's training forward is M2's contract; its loss and logits are transformers' own."""
    from transformers import BertForMaskedLM

    model = bert_tiny()
    ids = torch.randint(5, 128, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 7], labels[1, 8] = 11, 12, 13
    sel = labels.reshape(-1) != -100
    out = model(ids, labels=labels)
    hf = BertForMaskedLM.forward(model, ids, labels=labels)  # transformers' forward: every position decoded
    assert out.logits.shape == (3, 128) and hf.logits.shape == (2, 16, 128)
    torch.testing.assert_close(out.loss, hf.loss)
    torch.testing.assert_close(out.logits, hf.logits.reshape(-1, 128)[sel])
    assert out.masked_positions.tolist() == sel.nonzero().squeeze(-1).tolist() and out.masked_labels.tolist() == [11, 12, 13]
    assert model(ids).logits.shape == (2, 16, 128)  # without labels: transformers' model unchanged
    none = model(ids, labels=torch.full_like(ids, -100))
    assert none.loss.item() == 0.0 and none.logits.shape == (0, 128)  # transformers: NaN
    assert torch.isnan(BertForMaskedLM.forward(model, ids, labels=torch.full_like(ids, -100)).loss)


def test_bert_baseline_exports_as_transformers_bert(tmp_path):
    import json

    from transformers import BertForMaskedLM

    model = bert_tiny()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert type(loaded) is BertForMaskedLM
    for name, p in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], p, rtol=0, atol=0, msg=name)


def test_decoder_is_tied_to_word_embeddings():
    model = M2BertForMaskedLM(tiny())
    assert model.mlm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling(pooling):
    config = tiny(pooling=pooling, num_labels=3)
    model = M2BertForSequenceClassification(config).eval()
    hidden = torch.randn(2, 5, config.hidden_size)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = model.head.pool(hidden, mask)
    expect = hidden[:, 0] if pooling == "cls" else torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0)])
    torch.testing.assert_close(pooled, torch.tanh(model.head.pooler(expect)))
    out = model(torch.randint(5, 100, (2, 5)), attention_mask=mask, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.ndim == 0


def test_regression_head_uses_mse():
    model = M2BertForSequenceClassification(tiny(num_labels=1)).eval()
    out = model(torch.randint(5, 100, (2, 6)), labels=torch.tensor([0.5, 4.0]))
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, 4.0])))


def test_param_groups_partition_and_rates():
    model = M2BertForMaskedLM(tiny(long_conv_kernel_learning_rate=1e-3, hyena_wd=0.1, hyena_lr_pos_emb=1e-5))
    groups = param_groups(model, filter_decay="weak")  # the original's groups: tests/test_filter_recipe.py
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    default, filters, pos = groups
    assert (filters["lr"], filters["weight_decay"]) == (1e-3, 0.1)
    assert (pos["lr"], pos["weight_decay"]) == (1e-5, 0.0)
    layer0 = model.bert.layers[0].sequence_mixer
    filter_ids = {id(p) for p in filters["params"]}
    assert id(layer0.long_conv.freq) in filter_ids and id(layer0.long_conv.mlp_rev[0].weight) in filter_ids
    assert id(layer0.long_conv.bias) in {id(p) for p in default["params"]}


def test_hf_round_trip(tmp_path):
    config = tiny()
    model = M2BertForMaskedLM(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    ids = torch.randint(5, config.vocab_size, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        for loaded in (M2BertForMaskedLM.from_pretrained(tmp_path), AutoModelForMaskedLM.from_pretrained(tmp_path)):
            assert isinstance(loaded, M2BertForMaskedLM)
            assert loaded.mlm_head.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
            torch.testing.assert_close(loaded.eval()(ids, attention_mask=mask).logits, ref, rtol=0, atol=0)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), M2BertConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), M2BertModel)
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert isinstance(clf, M2BertForSequenceClassification)
    torch.testing.assert_close(clf.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)


def test_inference_filter_cache_follows_weight_changes():
    """In inference the filter spectra are cached; any weight update must invalidate them."""
    model = M2BertModel(tiny()).eval()
    ids = torch.randint(5, 100, (2, 20))
    with torch.no_grad():
        before = model(ids).last_hidden_state
        model.layers[0].sequence_mixer.long_conv.mlp_fwd[0].weight.add_(0.5)
        after = model(ids).last_hidden_state
    fresh = model(ids).last_hidden_state  # grad enabled: no cache involved
    assert (before - after).abs().max() > 1e-4
    torch.testing.assert_close(after, fresh.detach())


def test_decoupled_weight_decay_is_per_step_equivalent():
    """filter_decay=weak: DecoupledAdamW's weight decay is a per-step factor, so the filters get lr·hyena_wd;
    filter_decay=original hands hyena_wd over as is (x0.9 every step), as the original does."""
    model = M2BertForMaskedLM(tiny(long_conv_kernel_learning_rate=1e-3, hyena_wd=0.1))
    assert param_groups(model, filter_decay="weak")[1]["weight_decay"] == 0.1
    assert param_groups(model, decoupled=True, filter_decay="weak")[1]["weight_decay"] == pytest.approx(1e-4)
    assert param_groups(model, decoupled=True, filter_decay="original")[1]["weight_decay"] == 0.1
