"""Runs are never lost: unique default run names, no silent overwrite, autoresume past a killed save.

* The default run name is ``m2bert-pretrain-<YYYYmmdd-HHMMSS>`` (a Hydra resolver, so Hydra's own
  output folder uses it too); under a multi-process launch rank 0's name is broadcast, as
  Composer does for its generated names, so every rank writes to the same folder.
* A save folder that already holds checkpoints is only continued (``autoresume=true``) or
  replaced (``overwrite=true``) when the user says so; so is the run folder as a whole
  (``m2bert.run_folder``: export, summary and Hydra's config too, whatever ``save_folder`` says), and
  ``autoresume=true`` continues only the run whose checkpoints are in ``save_folder``.
* ``kill -9`` during a checkpoint save leaves a truncated ``ep*-ba*-rank*.pt`` (Composer's
  autoresume then stops on it with FileExistsError) or a ``latest-rank*.pt`` link to a missing
  file (Composer then silently restarts from batch 0). :func:`prepare_autoresume` sets partial
  files aside and points ``latest`` at the newest complete checkpoint before the Trainer is built;
  ``m2bert.pretrain`` then reads that checkpoint once, verified, and gives Composer a private re-save
  as ``load_path`` (Composer's own autoresume, which reads ``latest`` itself, runs only for trusted files).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import zipfile
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf

from m2bert import object_store
from m2bert.options import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
RUN_NAME_RESOLVER = "m2bert_run_name"
_generated: str | None = None


def launcher_start_time() -> float | None:
    """When the parent process started (Linux), if we are one of several ranks it launched (on this node; the
    ranks of other nodes have their own launcher).

    Ranks of ``composer -n N``/torchrun start a second or so apart; their launcher's start time is the
    same for all of them, so their Hydra folders agree too (the name itself is broadcast from rank 0).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        with open(f"/proc/{os.getppid()}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def multi_node() -> bool:
    """Whether this is one node of a multi-node launch (``composer --world_size`` above its ``-n``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def launch_time() -> str:
    """``YYYYmmdd-HHMMSS``: when this run was launched; every rank of a multi-process launch gives the same
    (their launcher's start), so their Hydra folder ``<run>/hydra/<launch time>`` is one."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(launcher_start_time()))


def generated_run_name() -> str:
    """This process's default run name, the same every time it is asked for (Hydra dir and run dir agree)."""
    global _generated
    if _generated is None:
        _generated = "m2bert-pretrain-" + launch_time()
    return _generated


def register_resolver() -> None:
    if not OmegaConf.has_resolver(RUN_NAME_RESOLVER):
        OmegaConf.register_new_resolver(RUN_NAME_RESOLVER, generated_run_name)


def from_rank_zero(value: T, device: str) -> T:
    """Rank 0's ``value`` on every rank (in a single process, ``value`` itself)."""
    from composer.utils import dist

    if dist.get_world_size() == 1:
        return value
    dist.initialize_dist(device)
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree_on_run_name(run_name: str, device: str) -> str:
    """Rank 0's generated name on every rank (ranks start a second apart); a user's name is kept as is."""
    if run_name != _generated:
        return run_name
    name = str(from_rank_zero(run_name, device))
    if name != run_name:
        log.info("run name %s (rank 0's)", name)
    return name


def _checkpoint_pattern(rank: int | str = r"\d+") -> re.Pattern[str]:
    return re.compile(rf"^ep(\d+)-ba(\d+)-rank{rank}\.pt$")


def existing_checkpoints(save_folder: str | os.PathLike[str]) -> list[str]:
    """Names of Composer checkpoints (and ``latest`` links) in ``save_folder``, a folder or an object-store URL
    (where one line names the URL when the store cannot be listed)."""
    pattern = _checkpoint_pattern()
    if object_store.is_remote(save_folder):
        names: list[str] = list(object_store.list_objects(str(save_folder), "save_folder"))
    else:
        folder = Path(save_folder)
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted(n for n in names if pattern.match(n) or n.startswith("latest-rank"))


def guard_save_folder(save_folder: str, autoresume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run over an earlier run's checkpoints unless told to continue or replace them."""
    if autoresume or overwrite:
        return
    found = existing_checkpoints(save_folder)
    if found:
        shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
        raise ConfigError(f"{save_folder} already holds checkpoints of an earlier run ({shown}): continue it with "
                          f"autoresume=true, replace them with overwrite=true, or choose another run_name")


def check_same_run(run_dir: str, save_folder: str) -> None:
    """``autoresume=true`` continues the run in ``run_dir``: refused when that run's checkpoints are elsewhere than
    ``save_folder`` (its export and summary would be replaced by a run that did not continue it)."""
    here = os.path.abspath(save_folder)
    default = os.path.join(run_dir, "checkpoints")
    recorded = None
    try:
        recorded = json.loads(Path(run_dir, "summary.json").read_text()).get("checkpoints")
    except (OSError, ValueError, AttributeError):
        pass
    for theirs in (default if existing_checkpoints(default) else None, recorded):
        if theirs and os.path.abspath(theirs) != here:
            raise ConfigError(f"autoresume=true: the run in {run_dir} keeps its checkpoints in {theirs}, not in "
                              f"save_folder={save_folder}; continue it with save_folder={theirs}, or choose another "
                              f"run_name")


def remove_checkpoints(save_folder: str) -> None:
    """``overwrite=true``: the earlier run's checkpoints go before the new run saves (a newer one of theirs left
    beside the new run's would be what a later autoresume continues)."""
    found = existing_checkpoints(save_folder)
    if found:
        log.warning("overwrite=true: deleting the earlier run's checkpoints in %s (%s)", save_folder, ", ".join(found))
    if object_store.is_remote(save_folder):
        object_store.delete(save_folder, found, "save_folder")
        return
    for name in found:
        os.unlink(os.path.join(save_folder, name))


def is_complete(path: str | os.PathLike[str]) -> bool:
    """A torch zip checkpoint whose central directory and pickle are there (a killed save has neither)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _set_aside(path: Path) -> Path:
    n = 1
    while (target := path.with_name(f"{path.name}.partial-{n}")).exists():
        n += 1
    os.replace(path, target)
    return target


def newest_remote_checkpoint(save_folder: str, rank: int = 0) -> str | None:
    """The URL of the newest ``ep*-ba*-rank{rank}.pt`` in an object-store ``save_folder`` (None: a fresh run). An
    object appears only once its upload completed, so there is no partial file to set aside."""
    pattern = _checkpoint_pattern(rank)
    found = [(int(m.group(2)), int(m.group(1)), name) for name in existing_checkpoints(save_folder)
             if (m := pattern.match(name))]
    return object_store.join(save_folder, max(found)[2]) if found else None


def prepare_autoresume(save_folder: str | os.PathLike[str], rank: int = 0) -> Path | str | None:
    """Make ``latest-rank{rank}.pt`` point at the newest complete checkpoint; return it (None: a fresh run).

    Partial checkpoints (a save killed midway) are renamed ``<name>.partial-<n>`` with a warning, never
    deleted. A ``latest`` link to a missing or partial file is repointed to the newest complete
    checkpoint, or, if there is none, refused with one line rather than silently restarting from zero.
    """
    if object_store.is_remote(save_folder):
        return newest_remote_checkpoint(str(save_folder), rank)
    folder = Path(save_folder)
    latest = folder / f"latest-rank{rank}.pt"
    if not folder.is_dir():
        return None
    pattern = _checkpoint_pattern(rank)
    complete: list[tuple[int, int, Path]] = []
    for p in folder.iterdir():
        m = pattern.match(p.name)
        if not m or not p.is_file():
            continue
        if is_complete(p):
            complete.append((int(m.group(1)), int(m.group(2)), p))
        else:
            aside = _set_aside(p)
            log.warning("autoresume: %s is incomplete (a save was interrupted); set aside as %s", p, aside.name)
    linked = latest.is_symlink() or latest.exists()
    target = latest.resolve() if latest.exists() else None  # follows the link; None when it dangles
    if target is not None and is_complete(target) and not pattern.match(target.name):
        return latest  # a checkpoint the user put there by hand: used as is (and checked like any other)
    if not complete:
        if linked:
            raise ConfigError(f"autoresume: {latest} points at {os.readlink(latest) if latest.is_symlink() else latest}, "
                              f"which is missing or incomplete, and {folder} holds no complete checkpoint to resume "
                              f"from; remove {latest} to start afresh")
        return None
    newest = max(complete, key=lambda t: (t[1], t[0]))[2]
    if target != newest.resolve():
        log.warning("autoresume: %s %s; resuming from the newest complete checkpoint %s", latest.name,
                    f"pointed at {os.readlink(latest)}" if latest.is_symlink() else
                    "was an incomplete file" if linked else "was missing", newest.name)
        if latest.is_symlink():
            latest.unlink()
        elif latest.exists():
            _set_aside(latest)
        os.symlink(newest.name, latest)
    return latest
