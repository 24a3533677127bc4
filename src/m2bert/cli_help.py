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
    """The docstring's own line breaks, and each option's default shown once.

    ``(default: ...)`` follows an option's help unless the help already says its default (``default:``: a
    ``None`` default reads better as what it means, "raw text", than as "None"), and not for required options or
    on/off flags, whose default is plain. :func:`help_problems` finds options whose default goes unsaid.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or "%(default)" in text or not _shows_default(action):
            return text
        return f"{text} (default: %(default)s)"


def _shows_default(action: argparse.Action) -> bool:
    """An option whose default the help should state: optional, takes a value, not --help."""
    return bool(action.option_strings) and not action.required and action.nargs != 0 \
        and action.default is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)


def help_problems(parser: argparse.ArgumentParser) -> list[str]:
    """What a reader of ``--help`` would miss: an option without help, a default said twice or not at all."""
    formatter = parser._get_formatter()
    problems = []
    for action in parser._actions:
        name = "/".join(action.option_strings) or action.dest
        if not action.help:
            problems.append(f"{name}: no help")
            continue
        text = formatter._expand_help(action)
        if text.count("default:") > 1:
            problems.append(f"{name}: default shown twice: {text}")
        elif _shows_default(action) and "default:" not in text:
            problems.append(f"{name}: default not shown: {text}")
        elif action.default is None and "(default: None)" in text:
            problems.append(f"{name}: default shown as None: {text}")
    return problems


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
    parser.add_argument("--name", default=name, help="file name of the results, without .json/.md")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an earlier {files} in --out")


def refuse_overwrite(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An earlier result in ``--out`` is kept (a parser error, exit 2) unless ``--overwrite``."""
    if args.out and not args.overwrite and (Path(args.out) / f"{args.name}.json").exists():
        parser.error(f"{Path(args.out) / (args.name + '.json')} exists: pass --overwrite to replace it, or another "
                     f"--name")
