"""One run, one folder: a plain run name, an exclusive lock, and no earlier run silently replaced.

Every CLI writes a run into ``<run_root>/<run_name>`` (m2bert-pretrain, m2bert-glue, m2bert-retrieval); the
rules are the same for all three, so they live here:

* ``run_name`` is one plain path component (no ``/``, not ``.`` or ``..``, no NUL): a run never writes
  outside ``run_root`` (:func:`check_run_name`).
* A run in progress holds ``<run folder>/run.lock``, created with ``O_EXCL`` and holding its pid and host.
  A second run of the same folder is refused in one line naming the lock file and its holder, so two runs
  started together cannot both write into one folder. The lock goes when the run ends, on errors too; a
  lock left by a killed run (its pid is dead on this host) is taken over with a warning.
* A run folder that holds anything of an earlier run (checkpoints, export, summary, results, Hydra's
  config) is refused unless the user continues that run (``autoresume=true``, GLUE's ``resume=true``)
  or replaces it (``overwrite=true``: the earlier run's files are deleted first, so nothing of it is left
  to pass for the new run's).

Under Hydra, :class:`RunFolderCallback` claims the folder before Hydra writes its own files (config, log)
into it; a pipeline's ``run()`` called from Python claims it itself (:func:`claimed`), a no-op when the
callback already did. Under a multi-process launch only the global rank 0 claims.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from m2bert.options import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# Listed first when a refusal names what an earlier run left: the files that say a run finished.
_TELLING = ("results.json", "summary.json", "model", "hf", "checkpoints", "jobs")
HYDRA_FOLDER = "hydra"  # hydra.run.dir is <run folder>/hydra/<launch time> (yamls/*.yaml)
NODE_START_SKEW = 120.0  # seconds: how much earlier than this node another node of a multi-node launch may start


def check_run_name(name: Any, key: str = "run_name") -> str:
    """``name`` as a plain folder name, or a ConfigError naming ``key``: a run stays inside ``run_root``."""
    text = str(name)
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    if not text or text in (".", "..") or "\0" in text or any(sep in text for sep in separators):
        raise ConfigError(f"{key}={text!r} is not a plain name: a run name is one folder name inside run_root "
                          f"(no '/', not '.' or '..'); put the folder elsewhere with run_root=<folder>")
    return text


@dataclass(frozen=True)
class RunFolder:
    """A pipeline's run folder and how its user may reuse it."""

    path: Path
    resume_key: str | None = None  # the key that continues the earlier run (autoresume, resume); None: none
    resume: bool = False
    overwrite: bool | None = False  # None: the CLI has no overwrite key
    other: str = "choose another run_name"  # the third way out, said last in a refusal

    def fixes(self) -> str:
        ways = ([f"continue it with {self.resume_key}=true"] if self.resume_key else []) + \
               (["replace it with overwrite=true"] if self.overwrite is not None else []) + [self.other]
        return ", ".join(ways[:-1]) + (", or " if len(ways) > 1 else "") + ways[-1]


def _global_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process from /proc, or None where it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    """Whether ``pid`` (which started at ``started`` ticks, if known) still runs on this host; a zombie or a
    reused pid (another start time) does not count."""
    if os.path.isdir("/proc/self"):
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X") and (started is None or stat[1] == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``<folder>/run.lock``: created with O_EXCL, holding this process's pid, host and start time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        stat = _proc_stat(os.getpid())
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "proc_start": stat[1] if stat else None}

    def _read(self) -> dict[str, Any] | None:
        """The holder's record; None while its writer has created the file but not yet written it."""
        for _ in range(20):
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                return {}
            try:
                return dict(json.loads(text))
            except ValueError:
                time.sleep(0.05)
        return None

    def acquire(self) -> None:
        """Take the lock, or raise a one-line ConfigError naming the lock file and who holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder == {}:
                    continue  # released meanwhile
                if holder is None or not self._take_over_stale(holder):
                    raise ConfigError(self._refusal(holder)) from None
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.record) + "\n")
            return

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        who = (f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})" if holder
               else "a process that left it unreadable")
        return (f"run folder {self.folder} is in use by another run: {self.path} is held by {who}; wait for that run "
                f"to end or choose another run_name (remove {self.path} only if that process is gone)")

    def _take_over_stale(self, holder: dict[str, Any]) -> bool:
        """Remove a lock whose process is dead on this host (True: try to take the lock again); False if its
        process is (or may be) alive: another host's pid cannot be checked from here."""
        pid, host = holder.get("pid"), holder.get("host")
        if host != socket.gethostname() or not isinstance(pid, int) or _alive(pid, holder.get("proc_start")):
            return False
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return True  # another run took it over first: try again
        try:
            moved = json.loads(aside.read_text())
        except ValueError:
            moved = None
        if moved != holder:  # moved a lock another run took over meanwhile: put it back, then look again
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink()
            return True
        aside.unlink()
        log.warning("%s was left by pid %s on %s (started %s), which is no longer running: taken over", self.path,
                    pid, host, holder.get("started"))
        return True

    def release(self) -> None:
        """Remove the lock file if it is still this process's."""
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


@dataclass
class _Claim:
    lock: RunLock
    created: list[Path]  # folders the claim made (deepest first), removed again if the run leaves them empty


_claims: dict[Path, _Claim] = {}


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _own_hydra_entries(folder: Path) -> set[str]:
    """What this process's Hydra job wrote into ``folder``: a sweep job's folder is its run folder."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import OmegaConfBaseException

    try:
        hc = HydraConfig.get()
        if _key(Path(hc.runtime.output_dir)) == _key(folder):
            return {".hydra", f"{hc.job.name}.log"}
    except (ValueError, TypeError, OmegaConfBaseException):  # not under Hydra, or before its job started
        pass
    return set()


def _written_since(path: Path, since: float) -> bool:
    """Every file under ``path`` is newer than ``since`` (the launch of this multi-process run)."""
    files = [path] if not path.is_dir() else [p for p in path.rglob("*") if p.is_file()]
    return all(p.lstat().st_mtime >= since for p in files)


def earlier_contents(folder: Path) -> list[Path]:
    """What an earlier run left in ``folder``: everything but the lock and this launch's own Hydra files."""
    from m2bert.train.runs import launcher_start_time, multi_node

    if not folder.is_dir():
        return []
    own = _own_hydra_entries(folder) | {LOCK_NAME}
    launched = launcher_start_time()  # other ranks of this launch may have written Hydra's files already
    entries = [p for p in folder.iterdir() if p.name not in own and not p.name.startswith(f"{LOCK_NAME}.stale-")]
    if launched is not None:
        # Other nodes' launchers start on their own (within seconds under srun) and write Hydra's folder before
        # this rank claims the run folder; nothing else is written before rank 0 has claimed it.
        skew = {HYDRA_FOLDER: NODE_START_SKEW} if multi_node() else {}
        entries = [p for p in entries if not _written_since(p, launched - skew.get(p.name, 2.0))]
    return sorted(entries, key=lambda p: (p.name not in _TELLING, _TELLING.index(p.name) if p.name in _TELLING else 0,
                                          p.name))


def _guard(folder: RunFolder) -> None:
    """Refuse an earlier run's folder unless continued or replaced; replacing deletes what it left."""
    found = earlier_contents(folder.path)
    if not found or folder.resume:
        return
    if folder.overwrite:
        log.warning("overwrite=true: deleting the earlier run in %s (%s)", folder.path,
                    ", ".join(p.name for p in found))
        for p in found:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        return
    names = [p.name for p in found]
    shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
    raise ConfigError(f"run folder {folder.path} already holds a run ({shown}): {folder.fixes()}")


def claim(folder: RunFolder) -> bool:
    """Lock ``folder.path`` and check what it holds (see the module's rules); True if this call took the
    lock, False if this process holds it already (the Hydra callback claimed it before Hydra wrote there)."""
    key = _key(folder.path)
    if key in _claims or _global_rank() != 0:
        return False
    created = [p for p in [key, *key.parents] if not p.exists()]
    key.mkdir(parents=True, exist_ok=True)
    lock = RunLock(key)
    try:
        lock.acquire()
    except ConfigError:
        _remove_empty(created)
        raise
    _claims[key] = _Claim(lock, created)
    try:
        _guard(folder)
    except BaseException:
        release(key)
        raise
    return True


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break


def release(path: Path) -> None:
    """Give up the lock on ``path``; folders the claim created go again if the run left them empty."""
    c = _claims.pop(_key(path), None)
    if c is not None:
        c.lock.release()
        _remove_empty(c.created)


def release_all() -> None:
    for key in list(_claims):
        release(key)


atexit.register(release_all)


@contextmanager
def claimed(folder: RunFolder) -> Iterator[None]:
    """Hold the run folder for the ``with`` block (nothing to do if the Hydra callback holds it already)."""
    took = claim(folder)
    try:
        yield
    finally:
        if took:
            release(folder.path)


class RunFolderCallback(Callback):
    """Claims the run folder before Hydra writes its config and log there; refusals are one line, exit 2.

    ``folder``: the dotted name of the CLI's ``run_folder(cfg) -> RunFolder`` (it checks ``run_name`` too).
    """

    def __init__(self, prog: str, folder: str) -> None:
        self.prog = prog
        self.folder = folder

    def _run_folder(self, config: Any) -> RunFolder:
        from hydra.utils import get_method

        fn: Callable[[Any], RunFolder] = get_method(self.folder)
        return fn(config)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from m2bert import cli

        try:
            claim(self._run_folder(config))
        except ConfigError as e:
            cli.fail(self.prog, e)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        release_all()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """A sweep's jobs claim their own folders; the name is checked before Hydra makes the sweep folder."""
        from m2bert import cli

        try:
            check_run_name(config.run_name)
        except ConfigError as e:
            cli.fail(self.prog, e)
