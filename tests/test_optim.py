"""The optimizer ``build_optimizer`` gives for ``decoupled_adamw``: Composer's DecoupledAdamW with its update as
foreach ops (bench/profile_train.py: the per-parameter loop cost ~2,000 dispatches per M2-BERT-base step), the
same arithmetic: parameters and optimizer state equal Composer's after several steps, and checkpoints are filed
under the same name."""
from __future__ import annotations

import copy

import torch
from composer.optim import DecoupledAdamW
from omegaconf import OmegaConf

from m2bert import M2BertConfig, M2BertForMaskedLM
from m2bert.train.builders import build_optimizer

OPT = {"name": "decoupled_adamw", "lr": 8e-4, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 1e-5}


def test_decoupled_adamw_is_foreach_and_equals_composers():
    from m2bert.train.foreach_adamw import ForeachDecoupledAdamW

    model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", long_conv_kernel_learning_rate=1e-3,
                                                        hyena_wd=0.1))
    reference = copy.deepcopy(model)
    opt = build_optimizer(model, OmegaConf.create(OPT))
    assert isinstance(opt, ForeachDecoupledAdamW) and len(opt.param_groups) > 1  # the filters' own groups
    ref_opt = DecoupledAdamW([{**g, "params": [dict(reference.named_parameters())[n] for n, p in model.named_parameters()
                                               if any(p is q for q in g["params"])]} for g in opt.param_groups])
    ids = torch.randint(5, 100, (2, 32), generator=torch.Generator().manual_seed(0))
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    for step in range(3):
        for m, o in ((model, opt), (reference, ref_opt)):
            torch.manual_seed(step)  # the same dropout masks for both
            m(input_ids=ids, labels=labels).loss.backward()
            if step == 1:  # a parameter without a gradient this step is skipped by both
                m.bert.embeddings.word_embeddings.weight.grad = None
            o.step()
            o.zero_grad(set_to_none=True)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=name)
    state, ref_state = opt.state_dict(), ref_opt.state_dict()
    assert state["param_groups"] == ref_state["param_groups"]
    for i, s in state["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(s[key], ref_state["state"][i][key], rtol=0, atol=1e-7)
    assert type(opt).__qualname__ == "DecoupledAdamW"  # Composer's checkpoints file it under this name
