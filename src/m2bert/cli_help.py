"""Help text of the argparse command-line tools: they take ``ArgumentParser`` from here, with their module
docstring without reST markup as the description, and every default shown.

Nothing here imports Hydra or OmegaConf: a tool such as ``bench/kernels.py`` runs on a bare GPU machine
without them. The two Hydra CLIs' help and composition are ``m2bert.cli``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring's own line breaks, and ``(default: ...)`` after every option's help."""


def plain(doc: str | None) -> str:
    """A docstring as terminal text: ``x`` → x, :func:`f` → f (reST markup means nothing in --help)."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "")


def ArgumentParser(doc: str | None, **kwargs) -> argparse.ArgumentParser:  # noqa: N802 (a factory named as the class)
    """``argparse.ArgumentParser`` with :func:`plain` ``doc`` as description and :class:`HelpFormatter`."""
    return argparse.ArgumentParser(description=plain(doc), formatter_class=HelpFormatter, **kwargs)


def add_result_args(parser: argparse.ArgumentParser, name: str, files: str = "NAME.json/.md") -> None:
    """A benchmark's ``--out``/``--name``/``--overwrite``: where its committed result files go."""
    parser.add_argument("--out", default=None, help=f"folder for {files} (default: print JSON only)")
    parser.add_argument("--name", default=name)
    parser.add_argument("--overwrite", action="store_true", help=f"replace an earlier {files} in --out")


def refuse_overwrite(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An earlier result in ``--out`` is kept (a parser error, exit 2) unless ``--overwrite``."""
    if args.out and not args.overwrite and (Path(args.out) / f"{args.name}.json").exists():
        parser.error(f"{Path(args.out) / (args.name + '.json')} exists: pass --overwrite to replace it, or another "
                     f"--name")
