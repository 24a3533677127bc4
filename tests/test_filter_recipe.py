"""The implicit filters' training recipe: the original's optimizer groups, the filter instruments (energy at
lags ≥ 3, context use) and the init scales."""
from __future__ import annotations

import json
import re

import pytest
import torch
from omegaconf import OmegaConf

from m2bert import M2BertConfig, M2BertForMaskedLM
from m2bert.model.original import original_to_ours
from m2bert.train.builders import build_optimizer
from m2bert.train.callbacks import filter_stats
from m2bert.train.context_use import IGNORE, _left_only, _windows, context_use
from tests.conftest import shared_path


def original_group(key: str) -> str:
    """The original's rule, from its code (HazyResearch/m2, bert/):

    - src/mm/hyena_utils.py, ``HyenaFilter.__init__``: ``for c in self.implicit_filter.children(): for name in
      c.state_dict(): setattr(getattr(c, name), "_optim", {"weight_decay": wd, "lr": lr})``: the forward MLP's
      Linear weights and biases and the ``Sin`` module's ``freq`` (one object, shared by ``implicit_filter_rev``);
      ``implicit_filter_rev`` itself is not tagged.
    - src/utils/train.py, ``OptimModule.register("z", z, lr=lr_pos_emb)``: ``_optim = {"lr": lr_pos_emb,
      "weight_decay": 0.0}``; ``t`` and ``deltas`` (lr 0.0) are buffers.
    - src/optim/create_param_groups.py: each distinct ``_optim`` becomes a group; the rest is the default group;
      main.py ``build_optimizer`` hands them to DecoupledAdamW as they are.
    """
    if re.search(r"\.filter_fn2?\.implicit_filter\.\d+\.(weight|bias|freq)$", key):
        return "filter"
    if key.endswith(".pos_emb.z"):
        return "pos"
    return "default"


def expected_groups(manifest_keys: list[str]) -> dict[str, str]:
    """Our parameter name → the original's group; a parameter the original holds under several names (the
    shared ``freq``) is tagged when any of them is (``_optim`` is an attribute of the one Parameter)."""
    out: dict[str, str] = {}
    for key in manifest_keys:
        ours = original_to_ours(key)
        if ours is None:
            continue
        group = original_group(key)
        out[ours] = group if out.get(ours, "default") == "default" else out[ours]
    return out


def effective_settings(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def test_original_filter_groups_follow_the_original_rule():
    """optimizer.filter_decay=original: every parameter of the released 80M model gets the lr and weight decay
    the original's create_param_groups gives it, as DecoupledAdamW receives them (hyena_wd 0.1 as is)."""
    manifest = json.loads(shared_path("golden", "m2_original_state_dict_manifest.json").read_text())["m2-bert-base-80m"]
    expected = expected_groups(list(manifest["state_dict"]))
    config = M2BertConfig.from_preset("m2-bert-base-80m")
    with torch.device("meta"):
        model = M2BertForMaskedLM(config)
    cfg = OmegaConf.create({"name": "decoupled_adamw", "lr": 8e-4, "betas": [0.9, 0.98], "eps": 1e-6,
                            "weight_decay": 1e-5, "filter_decay": "original"})
    settings = effective_settings(model, build_optimizer(model, cfg))
    want = {"filter": (config.long_conv_kernel_learning_rate, config.hyena_wd), "pos": (config.hyena_lr_pos_emb, 0.0),
            "default": (8e-4, 1e-5)}
    names = {n for n, _ in model.named_parameters()}
    assert names <= set(expected), sorted(names - set(expected))[:5]
    wrong = {n: (settings[n], want[expected[n]]) for n in names if settings[n] != want[expected[n]]}
    assert not wrong, f"{len(wrong)} parameters differ from the original's groups, e.g. {sorted(wrong.items())[:3]}"
    # The rule's consequences, spelled out: the reverse MLP trains in the default group, freq in the filter group.
    layer = "bert.layers.0.sequence_mixer.long_conv."
    assert settings[layer + "mlp_rev.0.weight"] == (8e-4, 1e-5)
    assert settings[layer + "mlp_fwd.3.weight"] == settings[layer + "freq"] == (1e-3, 0.1)
    assert settings[layer + "bias"] == (8e-4, 1e-5) and settings[layer + "z"] == (1e-5, 0.0)


def test_weak_filter_decay_groups_both_directions_per_step():
    model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny"))
    cfg = OmegaConf.create({"name": "decoupled_adamw", "lr": 8e-4, "betas": [0.9, 0.98], "eps": 1e-6,
                            "weight_decay": 1e-5, "filter_decay": "weak"})
    settings = effective_settings(model, build_optimizer(model, cfg))
    layer = "bert.layers.1.sequence_mixer.residual_long_conv."
    assert settings[layer + "mlp_rev.0.weight"] == settings[layer + "mlp_fwd.0.weight"] == pytest.approx((1e-3, 1e-4))
    assert settings[layer + "freq"] == pytest.approx((1e-3, 1e-4))


def test_filter_decay_is_a_checked_choice():
    from m2bert.model import param_groups

    with pytest.raises(ValueError, match="filter_decay='strong'"):
        param_groups(M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny")), filter_decay="strong")


def test_tail_energy_is_the_filters_energy_beyond_lag_two():
    torch.manual_seed(0)
    model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny"))
    f = model.bert.layers[0].sequence_mixer.long_conv
    k_fwd, k_rev = f(f.seq_len)
    expected = float(k_fwd[3:].pow(2).sum() + k_rev[2:].pow(2).sum())  # k_rev[m-1]: lag -m
    assert f.tail_energy() == pytest.approx(expected, rel=1e-6)
    stats = filter_stats(model)
    assert set(stats) == {"layer0.long_conv", "layer0.residual_long_conv", "layer1.long_conv",
                          "layer1.residual_long_conv"}
    assert stats["layer0.long_conv"]["energy"] == pytest.approx(expected, rel=1e-6)
    assert stats["layer0.long_conv"]["freq"] == pytest.approx(10.0)


def test_init_scales_scale_only_the_filters_and_keep_the_state_dict():
    torch.manual_seed(0)
    base = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny"))
    torch.manual_seed(0)
    scaled = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", residual_long_conv_init_scale=0.0,
                                                        long_conv_init_scale=0.5))
    assert base.state_dict().keys() == scaled.state_dict().keys()
    for i in range(2):
        b, s = base.bert.layers[i].sequence_mixer, scaled.bert.layers[i].sequence_mixer
        assert s.residual_long_conv.tail_energy() == 0.0
        assert s.long_conv.tail_energy() == pytest.approx(0.25 * b.long_conv.tail_energy(), rel=1e-5)
        torch.testing.assert_close(s.in_linear.weight, b.in_linear.weight)
        torch.testing.assert_close(s.long_conv.mlp_fwd[1].weight, b.long_conv.mlp_fwd[1].weight)
    # A saved model keeps its trained filters: the scales apply at initialisation only.
    assert scaled.config.to_dict()["residual_long_conv_init_scale"] == 0.0


def _row_batch(vocab: int, rows: int = 3, length: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (rows, length), generator=g)
    labels = torch.full_like(ids, IGNORE)
    pick = torch.rand(rows, length, generator=g) < 0.3
    labels[pick] = ids[pick]
    ids = torch.where(pick, torch.full_like(ids, 4), ids)  # [MASK]-like id
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    labels[2, 15:] = IGNORE
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_context_use_views_equal_the_truncated_and_separate_inputs():
    """Right context hidden = each scored token's row truncated after it; windows = each piece run alone."""
    torch.manual_seed(0)
    model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", hidden_dropout_prob=0.0)).eval()
    batch = _row_batch(model.config.vocab_size)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    left_ids, left_mask, left_labels = _left_only(ids, mask, labels, pad_id=0)
    with torch.no_grad():
        out = model(input_ids=left_ids, attention_mask=left_mask, labels=left_labels)
        for j in (0, len(left_ids) // 2, len(left_ids) - 1):
            t = int((left_labels[j] != IGNORE).nonzero())
            alone = model(input_ids=left_ids[j:j + 1, :t + 1], attention_mask=left_mask[j:j + 1, :t + 1],
                          labels=left_labels[j:j + 1, :t + 1])
            torch.testing.assert_close(out.logits[j], alone.logits[0], atol=1e-5, rtol=1e-5)
        w_ids, w_mask, w_labels = _windows(ids, mask, labels, 8, pad_id=0)
        # 20 tokens → 3 pieces a row (the last padded); row 2's third piece is all padding (mask 0 from 15): dropped
        assert w_ids.shape == (8, 8)
        torch.testing.assert_close(w_ids[1], ids[0, 8:16])
        one = model(input_ids=w_ids[1:2], attention_mask=w_mask[1:2], labels=w_labels[1:2])
        many = model(input_ids=w_ids, attention_mask=w_mask, labels=w_labels)
        first = int((w_labels[0] != IGNORE).sum())
        torch.testing.assert_close(many.logits[first:first + one.logits.shape[0]], one.logits, atol=1e-5, rtol=1e-5)
    result = context_use(model, [batch], rows=3)
    assert result["masked_tokens"] == int((labels != IGNORE).sum()) and result["rows"] == 3
    assert result["gain_window"] == pytest.approx(result["loss_window8"] - result["loss_full"], abs=2e-4)
    assert model.training is False


def test_context_use_is_zero_for_a_model_that_ignores_context():
    """A model whose token mixing is switched off (no sequence mixers' output) gains nothing from context."""
    torch.manual_seed(0)
    model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", hidden_dropout_prob=0.0,
                                                       use_positional_encodings=False))
    with torch.no_grad():
        for layer in model.bert.layers:
            layer.sequence_mixer.out_linear.weight.zero_()
            layer.sequence_mixer.out_linear.bias.zero_()
    result = context_use(model, [_row_batch(model.config.vocab_size)], rows=3)
    assert abs(result["gain_window"]) < 1e-4 and abs(result["gain_right"]) < 1e-4


def _probes_module():
    """bench/filter_recipe_probes.py, where the guard run and its measured thresholds are defined."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "filter_recipe_probes.py"
    spec = importlib.util.spec_from_file_location("bench_filter_recipe_probes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recommended_recipe_learns_and_keeps_its_long_convolutions(sample_mds, tmp_path):
    """filters=keep: the loss falls below what the earlier recipes reach in the same run, the long filters do not
    shrink, and the model uses right context (an M2 with collapsed filters gains exactly 0 from it)."""
    probes = _probes_module()
    got = probes.guard_run(str(sample_mds["mds"]), str(sample_mds["tokenizer"]), str(tmp_path), "keep")
    t = probes.GUARD_THRESHOLDS
    assert got["loss"] < t["loss_below"], got
    assert got["filter_energy_min"] > t["filter_energy_min_above"], got
    assert got["gain_right"] > t["gain_right_above"], got
