"""The ``m2bert-retrieval`` console script (Hydra, ``yamls/retrieval.yaml``): retrieval fine-tuning of M2-BERT.

    m2bert-retrieval start.path=runs/m2-80m/hf data.folder=data/retrieval
    m2bert-retrieval retrieval=m2_bert_80m_8k start.path=runs/m2-80m-8k/hf data.folder=data/retrieval

User errors end the run with one line on stderr and exit 2, as in m2bert-pretrain and m2bert-glue.
"""
from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from m2bert import cli
from m2bert.embeddings.schema import RetrievalConfig, register

log = logging.getLogger("m2bert.retrieval")
register()
cli.register_resolvers()

PROG = "m2bert-retrieval"
# Groups of the other CLIs, with what to use here instead.
FOREIGN = {
    "model": "the model comes from start.path (start.kind=hf|composer|original)",
    "data": "the retrieval set is data.folder=<folder written by m2bert-make-retrieval>",
    "optimizer": "the optimizer's settings are retrieval.lr, retrieval.weight_decay, retrieval.betas, retrieval.eps",
    "scheduler": "the schedule is retrieval.scheduler and retrieval.warmup_ratio",
    "glue": "recipes here are retrieval=<recipe>, e.g. retrieval=m2_bert_80m_2k",
    "parallel": "m2bert-retrieval runs on one device (device=auto|cpu|cuda)",
    "impl": "m2bert-retrieval has no impl switches",
}


def compose(overrides: list[str] | None = None) -> DictConfig:
    """``yamls/retrieval.yaml`` composed with command-line style overrides (tests, scripts)."""
    register()
    return cli.compose("retrieval", overrides)


@hydra.main(config_path="pkg://m2bert.yamls", config_name="retrieval", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    from m2bert.embeddings.retrieval import run

    cli.task_started()
    try:
        results = run(cfg)
    except cli.USER_ERRORS as e:
        cli.fail(PROG, e)
    print(json.dumps({k: results[k] for k in ("run_name", "before", "after", "train", "model")}, indent=2))


def main() -> None:
    """The console script: foreign groups refused, user errors one line on stderr, exit 2."""
    cli.reject_foreign_groups(PROG, FOREIGN)
    cli.check_choices(PROG, RetrievalConfig)
    cli.entry(hydra_main, PROG, "retrieval")


if __name__ == "__main__":
    main()
