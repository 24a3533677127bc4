"""One source for each fact (issue 12): the allowed values of each choice come from m2bert.options, and the
run's switches (kernels, long-convolution implementation, input checks) are not part of a saved model."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from m2bert import M2BertConfig, M2BertForMaskedLM, config as m2config
from m2bert import options
from m2bert.cli import choice_of
from m2bert.glue.schema import GlueConfig
from m2bert.options import Kernels, LongConvImpl, Pooling
from m2bert.train import builders
from m2bert.train.schema import PretrainConfig
from tests.conftest import compose_glue, compose_pretrain


def test_model_config_and_schemas_share_the_choices():
    assert m2config.KERNEL_CHOICES == options.choices(Kernels) == ("auto", "triton", "torch")
    assert m2config.LONG_CONV_IMPLS == options.choices(LongConvImpl) == ("fft", "monarch", "direct", "auto")
    assert m2config.POOLINGS == options.choices(Pooling) == ("cls", "mean")
    assert choice_of(PretrainConfig, "impl.kernels") is Kernels
    assert choice_of(PretrainConfig, "impl.long_conv_impl") is LongConvImpl
    assert choice_of(GlueConfig, "impl.kernels") is Kernels
    assert choice_of(GlueConfig, "glue.rte.pooling") is Pooling  # through Optional[TaskSettings]
    assert choice_of(PretrainConfig, "optimizer.lr") is None and choice_of(PretrainConfig, "model.overrides.x") is None


def test_omegaconf_checks_the_choices_at_composition():
    """Even without the CLI's one-line pre-check (a config composed from Python), a bad value never composes."""
    with pytest.raises(Exception) as info:
        compose_pretrain(["impl.kernels=fast"])
    text = f"{info.value} {info.value.__cause__}"
    assert "impl.kernels" in text and "expected one of [auto, triton, torch]" in text
    with pytest.raises(Exception) as info:
        compose_glue(["glue.cola.pooling=max", "start.path=x"])
    assert "expected one of [cls, mean]" in f"{info.value} {info.value.__cause__}"
    cfg = compose_glue(["impl.kernels=torch", "impl.compile=false", "start.path=x"])
    assert cfg.impl.kernels == "torch" and str(cfg.impl.compile) in ("false", "False")


def test_a_choice_reaches_the_model_as_a_plain_string():
    config = M2BertConfig.from_preset("m2-bert-tiny", kernels=Kernels.torch, long_conv_impl=LongConvImpl.direct,
                                      pooling=Pooling.mean)
    assert (type(config.kernels), type(config.long_conv_impl), type(config.pooling)) == (str, str, str)
    assert (config.kernels, config.long_conv_impl, config.pooling) == ("torch", "direct", "mean")


def test_run_switches_are_not_exported_and_old_exports_still_load(tmp_path):
    config = M2BertConfig.from_preset("m2-bert-tiny", kernels="torch", long_conv_impl="monarch", check_inputs=True)
    out = builders.atomic_save_pretrained(M2BertForMaskedLM(config), None, str(tmp_path / "hf"))
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert not set(m2config.RUN_FIELDS) & set(saved)
    assert saved["hidden_size"] == 64 and saved["pooling"] == "cls"  # the model's semantics are all there
    assert config.kernels == "torch"  # the object itself keeps the run's choice
    loaded = M2BertConfig.from_pretrained(out)
    assert (loaded.kernels, loaded.long_conv_impl, loaded.check_inputs) == ("auto", "fft", None)
    older = dict(saved, kernels="torch", long_conv_impl="direct", check_inputs=False)  # written before this change
    (tmp_path / "hf" / "config.json").write_text(json.dumps(older))
    old = M2BertConfig.from_pretrained(out)
    assert (old.kernels, old.long_conv_impl, old.check_inputs) == ("torch", "direct", False)
    M2BertForMaskedLM.from_pretrained(out)


def test_model_length_follows_the_preset_not_a_fixed_128(monkeypatch):
    impl = OmegaConf.create({"kernels": "torch", "long_conv_impl": "fft"})
    long = dict(m2config.PRESETS["m2-bert-tiny"], max_position_embeddings=512, long_conv_l_max=512)
    monkeypatch.setitem(m2config.PRESETS, "m2-bert-tiny-512", long)
    kept = builders.build_mlm_model(OmegaConf.create({"family": "m2", "preset": "m2-bert-tiny-512", "overrides": {}}),
                                    impl, 1000, 256)
    assert kept.config.long_conv_l_max == kept.config.max_position_embeddings == 512  # not shrunk to the data's 256
    model = OmegaConf.create({"family": "m2", "preset": "m2-bert-tiny", "overrides": {}})
    grown = builders.build_mlm_model(model, impl, 1000, 256)
    assert grown.config.long_conv_l_max == grown.config.max_position_embeddings == 256
    assert builders.build_mlm_model(model, impl, 1000, 64).config.long_conv_l_max == 128
    assert (grown.config.kernels, grown.config.long_conv_impl) == ("torch", "fft")  # impl.* reach the model


def test_constant_with_warmup_holds_alpha_f():
    cfg = compose_pretrain(["scheduler=constant_with_warmup"])
    assert builders.build_scheduler(cfg.scheduler).alpha == 1.0
    cfg.scheduler.alpha_f = 0.5
    assert builders.build_scheduler(cfg.scheduler).alpha == 0.5


def test_logged_config_shows_choices_as_plain_names():
    """The config Composer's console logger and W&B get (``yaml.dump`` of the hyperparameters) names each choice
    as typed, ``linear_decay_with_warmup``, never ``!!python/object/apply:m2bert.options.Scheduler``."""
    import yaml

    from m2bert.glue.driver import load_config

    pretrain = compose_pretrain([])
    glue = load_config(compose_glue(["start.path=x"]))
    for cfg in (pretrain, glue):
        text = yaml.dump(options.loggable(cfg))
        assert "linear_decay_with_warmup" in text and "!!python" not in text
    assert "!!python" in yaml.dump(OmegaConf.to_container(pretrain, resolve=True))  # what was logged before
    assert yaml.safe_load(yaml.dump(options.loggable(pretrain)))["scheduler"]["name"] == "linear_decay_with_warmup"
