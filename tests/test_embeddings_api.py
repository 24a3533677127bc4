"""Sentence embeddings of M2BertModel: the pooling they are defined by, normalisation, padding invariance, the
original config's translation and a save/load round trip through the Auto classes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m2bert import M2BertConfig, M2BertForSequenceClassification, M2BertModel
from m2bert.model.modeling import M2BertModelOutput


def _model(**fields) -> M2BertModel:
    torch.manual_seed(0)
    return M2BertModel(M2BertConfig.from_preset("m2-bert-tiny", hidden_dropout_prob=0.0, **fields)).eval()


def _batch(lengths: list[int], width: int, vocab: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (len(lengths), width), generator=gen)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids * mask, mask  # padded positions hold the pad id 0


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embedding_is_the_pooled_last_hidden_state(pooling):
    model = _model(pooling=pooling, sentence_embedding=True)
    ids, mask = _batch([12, 7, 3], 12)
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    assert isinstance(out, M2BertModelOutput)
    h = out.last_hidden_state
    if pooling == "cls":
        expected = h[:, 0]
    else:
        expected = torch.stack([h[i, : int(mask[i].sum())].mean(0) for i in range(len(ids))])
    torch.testing.assert_close(out.sentence_embedding, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(ids, mask), expected, rtol=1e-5, atol=1e-6)


def test_sentence_embedding_only_on_request():
    model = _model()
    ids, mask = _batch([5, 4], 5)
    with torch.no_grad():
        assert model(ids, attention_mask=mask).sentence_embedding is None
        on = model(ids, attention_mask=mask, return_sentence_embedding=True).sentence_embedding
        assert on.shape == (2, model.config.hidden_size)
        tup = model(ids, attention_mask=mask, return_dict=False, return_sentence_embedding=True)
    torch.testing.assert_close(tup[-1], on)


def test_normalised_embeddings_have_unit_norm():
    model = _model(pooling="mean", sentence_embedding=True, normalize_embeddings=True)
    ids, mask = _batch([9, 2, 6], 9)
    with torch.no_grad():
        emb = model(ids, attention_mask=mask).sentence_embedding
        raw = _model(pooling="mean").embed(ids, mask)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb, F.normalize(raw, dim=-1))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_an_embedding(pooling):
    """The point of padding invariance for retrieval: a text embeds the same alone or in a batch padded far."""
    model = _model(pooling=pooling, normalize_embeddings=True)
    ids, mask = _batch([10, 4], 10)
    with torch.no_grad():
        batched = model.embed(ids, mask)
        alone = model.embed(ids[1:, :4], mask[1:, :4])
        far = model.embed(torch.nn.functional.pad(ids, (0, 100)), torch.nn.functional.pad(mask, (0, 100)))
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(far, batched, rtol=1e-4, atol=1e-5)


def test_embedding_pooler_is_dense_tanh():
    model = _model(embedding_pooler=True)
    ids, mask = _batch([6, 6], 6)
    with torch.no_grad():
        h = model(ids, attention_mask=mask).last_hidden_state
        emb = model.embed(ids, mask)
    torch.testing.assert_close(emb, torch.tanh(model.pooler(h[:, 0])))
    # The task models have their own heads and leave the embedding pooler out (no idle weights under DDP).
    clf = M2BertForSequenceClassification(model.config)
    assert clf.bert.pooler is None and not any(k.startswith("bert.pooler") for k in clf.state_dict())


def test_classification_head_pools_the_same_way():
    torch.manual_seed(0)
    clf = M2BertForSequenceClassification(M2BertConfig.from_preset("m2-bert-tiny", pooling="mean", num_labels=2)).eval()
    ids, mask = _batch([8, 3], 8)
    with torch.no_grad():
        h = clf.bert(ids, attention_mask=mask).last_hidden_state
        mean = torch.stack([h[0, :8].mean(0), h[1, :3].mean(0)])
        torch.testing.assert_close(clf.head.pool(h, mask), torch.tanh(clf.head.pooler(mean)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        # The released retrieval models' switches, and the original's defaults (use_cls_token=True).
        (dict(gather_sentence_embeddings=True, use_cls_token=False, use_normalized_embeddings=False),
         dict(sentence_embedding=True, pooling="cls", embedding_pooler=True, normalize_embeddings=False)),
        (dict(gather_sentence_embeddings=True, use_cls_token=True, use_normalized_embeddings=True),
         dict(sentence_embedding=True, pooling="cls", embedding_pooler=False, normalize_embeddings=True)),
        (dict(gather_sentence_embeddings=True, use_cls_token=False, pool_all=True),
         dict(sentence_embedding=True, pooling="mean", embedding_pooler=True, normalize_embeddings=False)),
        # use_cls_token returns the raw [CLS] state even with pool_all (which only the pooler reads).
        (dict(gather_sentence_embeddings=True, use_cls_token=True, pool_all=True),
         dict(sentence_embedding=True, pooling="cls", embedding_pooler=False)),
        ({}, dict(sentence_embedding=False, pooling="cls", embedding_pooler=False, normalize_embeddings=False)),
        (dict(pool_all=True), dict(sentence_embedding=False, pooling="mean", embedding_pooler=False)),
    ],
)
def test_from_original_translates_embedding_fields(original, expected):
    base = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, hyena_filter_order=32, vocab_size=1024,
                max_position_embeddings=64, long_conv_l_max=64)
    config = M2BertConfig.from_original({**base, **original})
    assert {k: getattr(config, k) for k in expected} == expected


def test_from_original_refuses_sequence_token_planting():
    with pytest.raises(ValueError, match="sequence_token_planting"):
        M2BertConfig.from_original({"sequence_token_planting": True})


def test_round_trip_through_auto_model(tmp_path):
    from transformers import AutoConfig, AutoModel

    import m2bert  # noqa: F401  (registers the Auto classes)

    model = _model(pooling="mean", sentence_embedding=True, normalize_embeddings=True, embedding_pooler=True)
    ids, mask = _batch([7, 5], 7)
    with torch.no_grad():
        before = model(ids, attention_mask=mask).sentence_embedding
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.sentence_embedding, config.normalize_embeddings, config.embedding_pooler, config.pooling) == (
        True, True, True, "mean")
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is M2BertModel
    with torch.no_grad():
        after = loaded(ids, attention_mask=mask).sentence_embedding
    torch.testing.assert_close(after, before)
