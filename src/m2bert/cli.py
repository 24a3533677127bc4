"""How the Hydra entry points (m2bert-pretrain, m2bert-glue) end on a user's mistake.

A config error, a missing path or mandatory value, or a bad value found at start-up ends the run
with ONE line on stderr that names the key or file and the fix, exit code 2, and no empty run
folder (Hydra creates ``<run_root>/<run_name>/hydra`` before our code runs; it is removed again
when it holds nothing but Hydra's own files). ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
Hydra's own composition errors (unknown key, unknown group option) keep Hydra's message, which
names the key and the choices, and also exit with 2.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from m2bert.data.shards import ShardError
from m2bert.options import ConfigError

log = logging.getLogger(__name__)

EXIT_USAGE = 2
# What to do about a mandatory key left at ???.
MISSING_HINTS = {
    "data.local": "set data.local=<folder of MDS shards> (make them with m2bert-convert-c4 --out-root <folder>)",
    "start.path": "set start.path=<HF dir, Composer checkpoint or original checkpoint> "
                  "(m2bert-pretrain exports <run_root>/<run_name>/hf)",
}
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ShardError, FileNotFoundError, OmegaConfBaseException)
_task_started = False


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
    """Remove the Hydra run folder of a run that failed at start-up, if Hydra's files are all it holds."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:  # not under @hydra.main (called from Python)
        return
    if hc.mode != RunMode.RUN:
        return
    out = Path(hc.runtime.output_dir)
    if not out.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in out.iterdir()):
        return
    for handler in list(logging.getLogger().handlers):  # Hydra's job log file lives in that folder
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == out:
            logging.getLogger().removeHandler(handler)
            handler.close()
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    for parent in (out.parent, out.parent.parent):  # <run_root>/<run_name>, then <run_root>, if now empty
        try:
            parent.rmdir()
        except OSError:
            break


def fail(prog: str, e: BaseException) -> NoReturn:
    """End the run on a user error: one line on stderr, exit 2 (the traceback with HYDRA_FULL_ERROR=1)."""
    _remove_empty_hydra_dir()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    sys.stderr.write(f"{prog}: error: {one_line(e)}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE) from e


def task_started() -> None:
    """Called first thing in a Hydra task function: composition succeeded."""
    global _task_started
    _task_started = True


def entry(hydra_main: Callable[[], None]) -> None:
    """Run a ``@hydra.main`` function; Hydra's composition errors (exit 1 before our task starts) exit 2."""
    try:
        hydra_main()
    except SystemExit as e:
        if e.code == 1 and not _task_started:
            raise SystemExit(EXIT_USAGE) from e
        raise
