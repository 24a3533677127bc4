"""The model with ``kernels: triton`` (interpreted) equals ``kernels: torch``: outputs and a few training steps."""
import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM
from m2bert.model import kernel_switch

pytest.importorskip("triton")


def config(kernels: str, **overrides) -> M2BertConfig:
    fields = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, max_length=64, hidden_dropout_prob=0.0,
                  kernels=kernels)
    fields.update(overrides)
    return M2BertConfig.from_preset("m2-bert-tiny", **fields)


def batch(seqlen=40):
    torch.manual_seed(1)
    ids = torch.randint(5, 1024, (2, seqlen))
    attention = torch.ones_like(ids)
    attention[0, 29:] = 0  # padded rows
    ids[0, 29:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 3::5] = ids[:, 3::5]
    labels[0, 29:] = -100
    return ids, attention, labels


def twins(**overrides):
    torch.manual_seed(0)
    ref = M2BertForMaskedLM(config("torch", **overrides))
    ours = M2BertForMaskedLM(config("triton", **overrides))
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("additions", [False, True])
def test_forward_matches(additions, monkeypatch):
    ref, ours = twins(hyena_training_additions=additions)
    ids, attention, _ = batch()
    calls = []
    for name in ("seq_mixer_conv", "monarch_glu"):
        fn = getattr(kernel_switch, name)
        monkeypatch.setattr(kernel_switch, name, lambda *a, _fn=fn, _n=name, **k: calls.append(_n) or _fn(*a, **k))
    with torch.no_grad():
        a = ref.bert(ids, attention).last_hidden_state
        assert not calls  # kernels: torch never reaches the kernels
        b = ours.bert(ids, attention).last_hidden_state
    assert sorted(calls) == ["monarch_glu"] * 2 + ["seq_mixer_conv"] * 2  # both layers, both mixers
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_training_steps_match():
    ref, ours = twins()
    ids, attention, labels = batch()
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (ref, ours)]
    for _ in range(3):
        for model, opt in zip((ref, ours), opts):
            opt.zero_grad()
            model(ids, attention_mask=attention, labels=labels).loss.backward()
            opt.step()
    for (name, p), q in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=2e-5, msg=name)


def test_long_input_takes_the_passes():
    """Beyond L = 128 the model's sequence mixer runs the three-pass kernels: outputs and gradients match."""
    from m2bert.kernels.seq_mixer_conv import plan

    seqlen = 300
    assert plan(seqlen, 32).algorithm == "passes"
    ref, ours = twins(num_hidden_layers=1, max_length=seqlen)
    torch.manual_seed(2)
    ids = torch.randint(5, 1024, (1, seqlen))
    attention = torch.ones_like(ids)
    attention[0, 250:] = 0
    outs, grads = [], []
    for model in (ref, ours):
        out = model.bert(ids, attention).last_hidden_state
        out[0, :250].square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    assert grads[1].keys() == grads[0].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-3, atol=1e-5, msg=name)
