"""The two Hydra entry points (m2bert-pretrain, m2bert-glue): composing their config, their help, and how
they end on a user's mistake. (The argparse tools' help is ``m2bert.cli_help``, which imports no Hydra.)

Both compose from one config tree (``yamls/``), so each entry point lists only its own groups (the
``m2bert_options`` resolver, used by the ``hydra.help`` templates in ``yamls/pretrain.yaml`` and
``yamls/glue.yaml``) and refuses, in one line, a group that belongs to the other CLI (Hydra alone would
suggest ``+model=...``, which fails further on).

A config error, a missing path or mandatory value, or a bad value found at start-up ends the run
with ONE line on stderr that names the key or file and the fix, exit code 2, and no empty run
folder (Hydra creates ``<run_root>/<run_name>/hydra/<launch time>`` before our code runs; it is removed
again when it holds nothing but Hydra's own files, and so are the folders above it that are then empty).
``HYDRA_FULL_ERROR=1`` shows the traceback instead.
Hydra's own composition errors are one line too (:func:`hydra_error_line`): an unknown group option names the
closest option and lists them (``model=m2-bert-tiny`` → ``model=m2_bert_tiny``), an unknown key names the real
one (``lr`` → ``optimizer.lr``, ``glue.rte.learning_rate`` → ``glue.rte.lr``), a wrongly typed value says the
type (``optimizer.lr=abc``, ``tasks=rte`` → ``tasks=[rte]``); a command-line value outside a choice is refused
in one line before Hydra composes (:func:`check_choices`), with what each choice means where it is not obvious.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import sys
import typing
from collections.abc import Callable
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from m2bert import options
from m2bert.data.shards import ShardError
from m2bert.options import ConfigError

log = logging.getLogger(__name__)

# Groups of the other CLI, with what to use instead.
PRETRAIN_ONLY = {
    "model": f"the model comes from start.path (start.kind={'|'.join(options.choices(options.StartKind))}); the per-task recipe "
             "of a size is glue=<size>, e.g. glue=m2_bert_tiny",
    "data": "GLUE data is data.source=hf|<folder with TASK/train.tsv, dev.tsv>",
    "optimizer": "each task's optimizer is glue.<task>.optimizer (and .lr, .weight_decay)",
    "scheduler": "the schedule is glue.scheduler.t_warmup / glue.scheduler.alpha_f",
    "parallel": "GLUE jobs run one per GPU (gpus=[0,1,...], execution=queue)",
    "recipe": "GLUE's per-task recipe of a size is glue=<size>, e.g. glue=m2_bert_tiny",
    "impl": f"the speed-only switches here are impl.kernels={'|'.join(options.choices(options.Kernels))} "
            f"and impl.compile=auto|true|false",
}
GLUE_ONLY = {
    "glue": "GLUE recipes are for m2bert-glue; pretraining picks a size with model=<preset>",
}

EXIT_USAGE = 2
# What to do about a mandatory key left at ???.
MISSING_HINTS = {
    "data.local": "set data.local=<folder of MDS shards> (make them with m2bert-convert-c4 --out-root <folder>)",
    "start.path": "set start.path=<HF dir, Composer checkpoint or original checkpoint> "
                  "(m2bert-pretrain exports <run_root>/<run_name>/hf)",
}
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ShardError, FileNotFoundError, OmegaConfBaseException)
# Names users reach for, by the key that holds that setting here (a hint for an unknown key).
KEY_ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "batch_size": "global_train_batch_size",
               "seed": "seeds", "epochs": "max_duration", "steps": "max_duration", "max_steps": "max_duration"}
_task_started = False
_forced_full_error = False  # entry() sets HYDRA_FULL_ERROR itself, so that Hydra's errors reach it as exceptions


def group_options(group: str) -> str:
    """``model`` → ``bert_base, bert_tiny, m2_bert_base_110m, ...``: the YAML files of a group."""
    folder = resources.files("m2bert.yamls").joinpath(group)
    return ", ".join(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")))


def choice_values(name: str) -> str:
    """``Kernels`` → ``auto|triton|torch``: a choice of m2bert.options, as the help templates show it."""
    return "|".join(options.choices(getattr(options, name)))


def sequences_per_batch(tokens: int, length: int) -> int:
    """``${m2bert_sequences:16384,${data.max_seq_len}}``: how many sequences of ``length`` tokens hold ``tokens``
    tokens (at least 1), so a batch size written for one length keeps its memory at another (128 at 128, 8 at 2k).
    A length below 1 gives 1: the config checks then refuse the length itself, naming data.max_seq_len."""
    return max(1, int(tokens) // int(length)) if int(length) > 0 else 1


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("m2bert_sequences"):
        OmegaConf.register_new_resolver("m2bert_sequences", sequences_per_batch)
    if not OmegaConf.has_resolver("m2bert_options"):
        OmegaConf.register_new_resolver("m2bert_options", group_options)
    if not OmegaConf.has_resolver("m2bert_choices"):
        OmegaConf.register_new_resolver("m2bert_choices", choice_values)
    if not OmegaConf.has_resolver("m2bert_launch_time"):
        from m2bert.train.runs import launch_time

        OmegaConf.register_new_resolver("m2bert_launch_time", launch_time)


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """``yamls/<config_name>.yaml`` (``pretrain`` or ``glue``) composed with command-line style overrides, as
    the CLI would, for calling a pipeline's ``run`` from Python (the demo, the quality study, tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from m2bert.glue.schema import register as register_glue
    from m2bert.train.schema import register as register_pretrain

    register_pretrain()
    register_glue()
    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_module(config_module="m2bert.yamls", version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


def reject_foreign_groups(cli: str, foreign: dict[str, str], argv: list[str] | None = None) -> None:
    """Exit 2 with one line when an override selects a group of the other CLI (``model=...`` for GLUE)."""
    for arg in sys.argv[1:] if argv is None else argv:
        name = arg.lstrip("+~").split("=", 1)[0]
        if "=" in arg and name in foreign:
            sys.stderr.write(f"{cli}: no '{name}' group here ({arg}); {foreign[name]}. See {cli} --help.\n")
            raise SystemExit(EXIT_USAGE)


def field_type(schema: type, key: str) -> Any:
    """The type of ``key`` (``impl.kernels``, ``glue.rte.pooling``) in a structured schema (Optional[X] → X),
    or None."""
    node: Any = schema
    for part in key.split("."):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return None
        hint = typing.get_type_hints(node).get(part)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        node = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint  # Optional[X] → X
    return node


def choice_of(schema: type, key: str) -> type[options.Choice] | None:
    """The choice type of ``key`` (``impl.kernels``, ``glue.rte.pooling``) in a structured schema, or None."""
    node = field_type(schema, key)
    return node if isinstance(node, type) and issubclass(node, Enum) else None


def whole_number_error(key: str, value: float) -> ConfigError:
    """A number with a decimal point or exponent for an integer key (``global_train_batch_size=1e20``); OmegaConf
    would refuse it in several lines, and a huge one is a typo whatever its form."""
    from m2bert.train.validate import MAX_SIZE

    if not math.isfinite(value) or abs(value) > MAX_SIZE:
        return ConfigError(f"{key}={value:g} is out of range: at most {MAX_SIZE} (2^31 - 1)")
    hint = f"; write {key}={int(value)}" if value.is_integer() else ""
    return ConfigError(f"{key}={value!r} must be a whole number{hint}")


def check_choices(prog: str, schema: type, argv: list[str] | None = None) -> None:
    """A command-line value outside a choice (``impl.kernels=fast``, also inside a sweep): one line naming the
    key and the allowed values, exit 2. OmegaConf refuses it anyway while composing, but Hydra reports that
    in several lines; the allowed values are the schema's, i.e. the definitions in m2bert.options. So is a
    number with a decimal point or exponent for an integer key (``global_train_batch_size=1e20``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
            kind = None if override.is_delete() else field_type(schema, override.key_or_group)
            choice = choice_of(schema, override.key_or_group) if kind is not None else None
            if choice is None and kind is not int:
                continue
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except (HydraException, TypeError, ValueError):
            continue  # Hydra reports what it cannot parse
        if choice is None:
            for value in values:
                if isinstance(value, float):
                    fail(prog, whole_number_error(override.key_or_group, value))
            continue
        values = [str(v).lower() if isinstance(v, bool) else str(v) if not isinstance(v, str) else v for v in values]
        allowed = options.choices(choice)
        for value in values:
            if not (isinstance(value, str) and (value in allowed or value.startswith("${"))):
                fail(prog, ConfigError(f"{override.key_or_group}={value!r}; choose one of {options.described(choice)}"))


def check_missing(cfg: DictConfig) -> None:
    """Mandatory values (``???``) not set on the command line: one ConfigError naming them and the fix."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hints = "; ".join(MISSING_HINTS.get(k, f"set {k}=...") for k in missing)
        raise ConfigError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set (???): {hints}")


def one_line(e: BaseException) -> str:
    """The message of a user error on one line (OmegaConf adds ``full_key:`` lines; keep the first)."""
    if isinstance(e, MissingMandatoryValue) and getattr(e, "full_key", None):
        key = str(e.full_key)
        return f"{key} is not set (???): {MISSING_HINTS.get(key, f'set {key}=...')}"
    text = str(e).strip() or type(e).__name__
    first = text.splitlines()[0]
    if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None) and e.full_key not in first:
        first = f"{e.full_key}: {first}"
    return first


def _remove_empty_hydra_dir() -> None:
    """Remove the Hydra folder of a run that failed at start-up, if Hydra's files are all it holds (it is this
    launch's own: ``hydra/<launch time>``), then the folders above it that it leaves empty."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not _task_started:  # refused before the task (the run folder's callback): Hydra has made no folder yet
        return
    try:
        hc = HydraConfig.get()
        if hc.mode != RunMode.RUN:
            return
        out = Path(hc.runtime.output_dir)
    except (ValueError, OmegaConfBaseException):  # not under @hydra.main, or before Hydra made its folder
        return
    if not out.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in out.iterdir()):
        return
    for handler in list(logging.getLogger().handlers):  # Hydra's job log file lives in that folder
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == out:
            logging.getLogger().removeHandler(handler)
            handler.close()
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    for parent in list(out.parents)[:3]:  # hydra/, <run_root>/<run_name>, then <run_root>, while empty
        try:
            parent.rmdir()
        except OSError:
            break


def traceback_wanted() -> bool:
    """The user set ``HYDRA_FULL_ERROR=1`` (not :func:`entry`, which sets it to receive Hydra's errors)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" and not _forced_full_error


def fail(prog: str, e: BaseException) -> NoReturn:
    """End the run on a user error: one line on stderr, exit 2 (the traceback with HYDRA_FULL_ERROR=1). The
    run folder's lock is released first, then an otherwise empty run folder is removed."""
    from m2bert import run_folder

    run_folder.release_all()
    _remove_empty_hydra_dir()
    if traceback_wanted():
        raise e
    sys.stderr.write(f"{prog}: error: {one_line(e)}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE) from e


def task_started() -> None:
    """Called first thing in a Hydra task function: composition succeeded."""
    global _task_started
    _task_started = True


def config_keys(config_name: str) -> list[str]:
    """Every key of the default composed ``yamls/<config_name>.yaml``, dotted (``optimizer.lr``), for hints."""
    def walk(node: Any, prefix: str) -> list[str]:
        keys = []
        for key in node.keys() if isinstance(node, DictConfig) else ():
            path = f"{prefix}{key}"
            keys.append(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                keys += walk(child, f"{path}.")
        return keys

    try:
        return walk(compose(config_name), "")
    except Exception:  # noqa: BLE001 - a hint is optional; the error is reported anyway
        return []


def key_hint(key: str, keys: list[str]) -> str:
    """``lr`` → ``did you mean optimizer.lr?``; ``glue.rte.learning_rate`` → ``did you mean glue.rte.lr?``."""
    parent, _, leaf = key.rpartition(".")
    leaves = sorted({k.rpartition(".")[2] for k in keys})
    wanted = [KEY_ALIASES[leaf]] if leaf in KEY_ALIASES else []
    wanted += [c for c in difflib.get_close_matches(leaf, leaves, n=3, cutoff=0.75) if c not in wanted]
    for name in wanted:  # the same place first, then anywhere
        if (candidate := f"{parent}.{name}" if parent else name) in keys:
            return f"; did you mean {candidate}?"
    for name in wanted:
        found = [k for k in keys if k.rpartition(".")[2] == name]
        if found:
            more = f" (or {len(found) - 2} more)" if len(found) > 2 else ""
            return f"; did you mean {' or '.join(found[:2])}{more}?"
    return ""


def _parse_error_arg(argv: list[str]) -> str | None:
    """The first command-line override Hydra's grammar refuses (its own message does not say which)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except HydraException:
            return arg
    return None


def hydra_error_line(e: BaseException, config_name: str | None, argv: list[str]) -> str:
    """One line for an error Hydra raises while composing: what is wrong, with the fix (the closest group option
    and the list; the real key; the type a value needs)."""
    import re

    from hydra.errors import MissingConfigException, OverrideParseException

    first = (str(e).strip() or type(e).__name__).splitlines()[0]
    cause = e.__cause__
    if isinstance(e, MissingConfigException) and e.options and e.missing_cfg_file:
        group, _, option = str(e.missing_cfg_file).rpartition("/")
        close = difflib.get_close_matches(option.replace("-", "_").lower(), list(e.options), n=1, cutoff=0.5)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={option}: no such {group} option; {hint}the options: {', '.join(e.options)}"
    if isinstance(e, OverrideParseException):
        arg = _parse_error_arg(argv)
        return f"cannot parse {arg!r}: {first} (quote a value with brackets or commas, e.g. 'tasks=[rte,mrpc]')" \
            if arg else first
    merging = re.match(r"Error merging override (.+?)=(.*)$", first)
    overriding = re.match(r"Could not override '(.+?)'", first)
    reason = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    if overriding and "not in struct" not in reason and "not in '" in reason:  # a key the schema lacks
        key = overriding.group(1)
        hint = key_hint(key, config_keys(config_name)) if config_name else ""
        return f"{key}: no such key{hint or ' (the settings and their values: --cfg job)'}"
    if overriding and "not in struct" in reason:  # an open section (model.overrides): Hydra's + is the fix
        key = overriding.group(1)
        return f"{key} is not set in this config: add it with +{key}=..."
    if merging:
        key, value = merging.group(1).lstrip("+~"), merging.group(2)
        kind = re.search(r"could not be converted to (\w+)", reason)
        if kind:
            what = {"Float": "a number", "Integer": "a whole number", "Boolean": "true or false"}.get(kind.group(1),
                                                                                                    kind.group(1))
            return f"{key}={value!r} must be {what}"
        if "is not a ListConfig, list or tuple" in reason:
            return f"{key}={value} must be a list: write {key}=[{value}]"
        return f"{key}={value}: {reason or first}"
    return f"{first}{f' ({reason})' if reason and reason not in first else ''}"


def entry(hydra_main: Callable[[], None], prog: str | None = None, config_name: str | None = None) -> None:
    """Run a ``@hydra.main`` function. Hydra's composition errors (which it would print in several lines and exit
    1 with) are one line naming the problem and the fix, exit 2; ``config_name`` lets the line name the real key
    of an unknown one. ``HYDRA_FULL_ERROR`` is set while Hydra runs so that its errors reach us as exceptions."""
    global _forced_full_error
    from hydra.errors import HydraException

    prog = prog or Path(sys.argv[0]).name
    forced = os.environ.get("HYDRA_FULL_ERROR") != "1"
    if forced:
        os.environ["HYDRA_FULL_ERROR"] = "1"
        _forced_full_error = True
    try:
        hydra_main()
    except SystemExit as e:
        if e.code == 1 and not _task_started:
            raise SystemExit(EXIT_USAGE) from e
        raise
    except (HydraException, *USER_ERRORS) as e:
        if not forced or _task_started:
            raise
        line = hydra_error_line(e, config_name, sys.argv[1:]) if isinstance(e, HydraException) else one_line(e)
        sys.stderr.write(f"{prog}: error: {line}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_USAGE) from e
    finally:
        if forced:
            os.environ.pop("HYDRA_FULL_ERROR", None)
            _forced_full_error = False
