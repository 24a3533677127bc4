"""Help text of the command-line tools. The argparse tools take ``ArgumentParser`` from here: their
module docstring without reST markup as the description, and every default shown.

The two Hydra CLIs share one config tree: both compose from one config tree (``yamls/``), so each
entry point lists only its own groups (the ``m2bert_options`` resolver, used by the ``hydra.help``
templates in ``yamls/pretrain.yaml`` and ``yamls/glue.yaml``) and refuses, in one line, a group
that belongs to the other CLI (Hydra alone would suggest ``+model=...``, which fails further on).
"""
from __future__ import annotations

import argparse
import re
import sys
from importlib import resources

# Groups of the other CLI, with what to use instead.
PRETRAIN_ONLY = {
    "model": "the model comes from start.path (start.kind=hf|composer|original); the per-task recipe "
             "of a size is glue=<size>, e.g. glue=m2_bert_tiny",
    "data": "GLUE data is data.source=hf|<folder with TASK/train.tsv, dev.tsv>",
    "optimizer": "each task's optimizer is glue.<task>.optimizer (and .lr, .weight_decay)",
    "scheduler": "the schedule is glue.scheduler.t_warmup / glue.scheduler.alpha_f",
    "parallel": "GLUE jobs run one per GPU (gpus=[0,1,...], execution=queue)",
    "impl": "the speed-only switch here is kernels=auto|triton|torch",
}
GLUE_ONLY = {
    "glue": "GLUE recipes are for m2bert-glue; pretraining picks a size with model=<preset>",
}


def group_options(group: str) -> str:
    """``model`` → ``bert_base, bert_tiny, m2_bert_base_110m, ...``: the YAML files of a group."""
    folder = resources.files("m2bert.yamls").joinpath(group)
    return ", ".join(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")))


def register_resolvers() -> None:
    from omegaconf import OmegaConf  # here: the argparse tools (bench/kernels.py on a bare GPU machine) lack it

    if not OmegaConf.has_resolver("m2bert_options"):
        OmegaConf.register_new_resolver("m2bert_options", group_options)


def reject_foreign_groups(cli: str, foreign: dict[str, str], argv: list[str] | None = None) -> None:
    """Exit 2 with one line when an override selects a group of the other CLI (``model=...`` for GLUE)."""
    for arg in sys.argv[1:] if argv is None else argv:
        name = arg.lstrip("+~").split("=", 1)[0]
        if "=" in arg and name in foreign:
            sys.stderr.write(f"{cli}: no '{name}' group here ({arg}); {foreign[name]}. See {cli} --help.\n")
            raise SystemExit(2)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring's own line breaks, and ``(default: ...)`` after every option's help."""


def plain(doc: str | None) -> str:
    """A docstring as terminal text: ``x`` → x, :func:`f` → f (reST markup means nothing in --help)."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "")


def ArgumentParser(doc: str | None, **kwargs) -> argparse.ArgumentParser:  # noqa: N802 (a factory named as the class)
    """``argparse.ArgumentParser`` with :func:`plain` ``doc`` as description and :class:`HelpFormatter`."""
    return argparse.ArgumentParser(description=plain(doc), formatter_class=HelpFormatter, **kwargs)
