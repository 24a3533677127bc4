"""Released sizes: parameter counts and state-dict names against the original's manifest (acceptance 2)."""
import json

import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM
from m2bert.model.original import original_to_ours
from tests.conftest import shared_path

SIZES = {
    "m2-bert-base-80m": 80_285_760,
    "m2-bert-base-110m": 115_583_616,
    "m2-bert-large-260m": 259_133_760,
    "m2-bert-large-341m": 341_038_144,
}


def _meta_model(name: str) -> M2BertForMaskedLM:
    with torch.device("meta"):  # shapes only: no memory for 341M parameters
        return M2BertForMaskedLM(M2BertConfig.from_preset(name))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_parameter_count(name):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == SIZES[name]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_state_dict_maps_onto_manifest(name):
    manifest = json.loads(shared_path("golden", "m2_original_state_dict_manifest.json").read_text())[name]
    assert manifest["num_parameters"] == SIZES[name]
    ours = {k: tuple(v.shape) for k, v in _meta_model(name).state_dict().items()}
    hit = set()
    for key, shape in manifest["state_dict"].items():
        target = original_to_ours(key)
        if target is None:  # the constant position_ids buffer
            assert key.endswith("position_ids")
            continue
        assert ours[target] == tuple(shape), key
        hit.add(target)
    # Every tensor of ours comes from the manifest; aliases are the only many-to-one keys.
    assert hit == set(ours)
    aliases = len(manifest["state_dict"]) - 1 - len(hit)
    n_filters = 2 * 12
    assert aliases == n_filters * 5  # 6 names of one shared Sin frequency per filter


def test_length_preset_is_one_override():
    config = M2BertConfig.from_preset("m2-bert-base-80m", max_length=8192)
    assert config.max_position_embeddings == config.long_conv_l_max == 8192


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="unknown preset"):
        M2BertConfig.from_preset("m2-bert-huge")
    with pytest.raises(ValueError, match="hiden_size"):
        M2BertConfig.from_preset("m2-bert-tiny", hiden_size=12)


def test_invalid_values_name_the_field():
    with pytest.raises(ValueError, match="pooling"):
        M2BertConfig.from_preset("m2-bert-tiny", pooling="max")
    with pytest.raises(ValueError, match="long_conv_l_max"):
        M2BertConfig.from_preset("m2-bert-tiny", long_conv_l_max=4096)
