"""Exactness against the original implementation's golden outputs (acceptance 1)."""
import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def golden():
    io = torch.load(shared_path("golden", "m2_tiny_golden.io.pt"), weights_only=True)
    return io, shared_path("golden", "m2_tiny_golden.pt")


@pytest.mark.parametrize("impl", ["fft", "monarch", "direct"])
def test_reproduces_original_logits(golden, impl):
    io, ckpt = golden
    config = M2BertConfig.from_original(io["config"], long_conv_impl=impl)
    model = M2BertForMaskedLM.from_original_checkpoint(str(ckpt), config).eval()
    assert model.config.padding_invariant is False
    with torch.no_grad():
        out = model(io["input_ids"], attention_mask=io["attention_mask"], token_type_ids=io["token_type_ids"],
                    output_hidden_states=True)
    assert out.logits.shape == io["mlm_logits"].shape
    assert (out.logits - io["mlm_logits"]).abs().max().item() <= 1e-4
    assert (out.hidden_states[-1] - io["last_hidden_state"]).abs().max().item() <= 1e-4
    # The golden inputs include a right-padded row: the original lets padding leak, and so must we here.
    assert io["attention_mask"].min() == 0


def test_original_config_translation(golden):
    io, _ = golden
    config = M2BertConfig.from_original(io["config"])
    assert (config.hidden_size, config.hyena_filter_order, config.long_conv_l_max) == (64, 32, 64)
    assert config.pooling == "cls" and config.residual_long_conv and config.bidirectional


def test_original_config_rejects_attention():
    with pytest.raises(ValueError, match="monarch_mixer_sequence_mixing"):
        M2BertConfig.from_original({"monarch_mixer_sequence_mixing": False})
