"""Long-context pretraining (2k / 8k / 32k, as the original's retrieval models): the length YAMLs compose into the
right model and batch sizes, and a tiny model pretrains at 2048 tokens through the real entry point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from m2bert.train.schema import register
from tests.conftest import compose_pretrain, tiny_pretrain_overrides

register()

# Parameters of m2-bert-base-80m with hyena_training_additions off (the retrieval yaml's setting) at 128 tokens;
# each further position adds a 768-wide position embedding and, in 12 layers × 2 implicit filters, 5 features.
BASE_80M_NO_ADDITIONS = 80_267_328
PER_POSITION = 768 + 12 * 2 * 5


@pytest.mark.parametrize(("name", "length"), [("2k", 2048), ("8k", 8192), ("32k", 32768)])
def test_length_yamls_build_the_retrieval_shapes(tmp_path, name, length):
    from m2bert.train.builders import build_mlm_model

    cfg = compose_pretrain([f"model=m2_bert_base_80m_{name}", f"data.local={tmp_path}", f"run_root={tmp_path}",
                            "run_name=x"])
    assert cfg.data.max_seq_len == length  # the data follow the model's length
    assert cfg.impl.device_train_microbatch_size == max(1, 16384 // length) == cfg.device_eval_batch_size
    with torch.device("meta"):  # shapes only: a 32k position table is 25M parameters
        model = build_mlm_model(cfg.model, cfg.impl, 30522, cfg.data.max_seq_len)
    c = model.config
    assert (c.max_position_embeddings, c.long_conv_l_max) == (length, length)
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.hyena_filter_order, c.hyena_emb_dim) == (
        768, 3072, 12, 128, 5)
    assert c.hyena_training_additions is False and c.vocab_size == 30528
    assert sum(p.numel() for p in model.parameters()) == BASE_80M_NO_ADDITIONS + (length - 128) * PER_POSITION


def test_default_lengths_are_unchanged(tmp_path):
    cfg = compose_pretrain([f"data.local={tmp_path}"])
    assert (cfg.data.max_seq_len, cfg.impl.device_train_microbatch_size, cfg.device_eval_batch_size) == (128, 128, 128)


@pytest.fixture(scope="module")
def mds_2048(sample_mds, tmp_path_factory) -> Path:
    """The offline sample converted as m2bert-convert-c4 --concat-tokens 2048 does: rows of 2048 token ids."""
    from m2bert.data.convert_c4 import convert

    out = tmp_path_factory.mktemp("mds2048")
    convert(str(sample_mds["raw"] / "c4" / "en"), str(out), splits=("train", "val"), tokenizer=str(sample_mds["tokenizer"]),
            concat_tokens=2048, progress=False)
    return out


def test_pretrains_at_2048_tokens(sample_mds, mds_2048, tmp_path):
    from m2bert.pretrain import run

    index = json.loads((mds_2048 / "val" / "index.json").read_text())
    assert sum(s["samples"] for s in index["shards"]) >= 1
    overrides = tiny_pretrain_overrides(
        sample_mds, tmp_path, "long", settings={"global_train_batch_size": 2, "impl.device_train_microbatch_size": 2,
                                                "device_eval_batch_size": 2, "eval_subset_num_batches": 1})
    overrides = [o for o in overrides if not o.startswith("data.local=")] + [
        f"data.local={mds_2048}", "+model.overrides.max_length=2048", "max_duration=3ba", "eval_interval=3ba",
        "export_hf=false"]
    cfg = compose_pretrain(overrides)
    assert cfg.data.max_seq_len == 2048
    summary = run(cfg)
    assert summary["batches"] == 3
    loss = summary["eval"][-1]["loss"]
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    assert any(Path(summary["checkpoints"]).glob("ep*-ba3-rank0.pt"))
