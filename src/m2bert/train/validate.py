"""Start-up checks of config values the schema's types cannot express (sizes, durations, betas).

They run before Composer, the tokenizer or the model are imported, so a typo costs seconds, not
a model build: each raises a one-line ConfigError naming the key and what it accepts.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from m2bert.options import ConfigError, unknown_keys

# Composer's time units (composer.core.time.TimeUnit) and its "number followed by a unit" rule
# (Time.from_timestring), plus its timedelta form (1h30m); checked without importing Composer.
_TIME_UNITS = ("iter", "ep", "ba", "sp", "tok", "dur", "sec")
_TIME_RE = re.compile(r"^(.+?)(" + "|".join(_TIME_UNITS) + r")$", re.IGNORECASE)
_TIMEDELTA_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# What Composer's console logger counts in (ConsoleLogger refuses any other unit when the Trainer is built), and
# so does GLUE's progress line: ``console_log_interval`` takes these only.
CONSOLE_UNITS = ("ep", "ba")


# The largest sizes accepted: a batch, a sequence length or a subset beyond int32 is a typo, never a run (and
# would overflow 32-bit indexing); a duration beyond int64 cannot be counted by Composer's timestamps.
MAX_SIZE = 2**31 - 1
MAX_DURATION = 2**63 - 1


def check_time(key: str, value: Any, *, positive: bool = True, total: bool = False,
               units: tuple[str, ...] = _TIME_UNITS) -> None:
    """``value`` is a Composer time string such as ``70000ba``, ``1ep``, ``0.06dur`` or ``2h``; ``total``: it is a
    run's length (``max_duration``), which Composer takes only in counted units (ep, ba, sp, tok, iter); ``units``:
    the only units this setting takes (``CONSOLE_UNITS`` for ``console_log_interval``)."""
    text = str(value).strip()
    m = _TIME_RE.match(text)
    number: float | None = None
    unit = "sec"
    if m:
        unit = m.group(2).lower()
        try:
            number = float(m.group(1))
        except ValueError:
            number = None
    elif text and _TIMEDELTA_RE.match(text) and any(_TIMEDELTA_RE.match(text).groups()):
        number = 1.0
    if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ConfigError(f"{key}={value!r} is not a {'positive ' if positive else ''}Composer duration: "
                          f"use a number and a unit ({', '.join(_TIME_UNITS)}), e.g. {key}=1000ba")
    if total and unit in ("dur", "sec"):
        why = "a fraction of the run cannot set the run" if unit == "dur" else "not wall-clock time"
        raise ConfigError(f"{key}={value!r}: a run's length is counted in ep, ba, sp or tok ({why}), e.g. {key}=1000ba")
    if unit not in units:
        raise ConfigError(f"{key}={value!r}: {key} is counted in {' or '.join(units)} only"
                          f"{' (not wall-clock time)' if unit == 'sec' else ''}, e.g. {key}=100{units[-1]}")
    if unit != "dur" and not number.is_integer():
        raise ConfigError(f"{key}={value!r} is not a whole number of {unit}: Composer counts {unit} in whole units "
                          f"(only dur, a fraction of the run, takes decimals), e.g. {key}={max(1, int(number))}{unit}")
    if number > MAX_DURATION:
        raise ConfigError(f"{key}={value!r} is out of range: at most {MAX_DURATION} (2^63 - 1) {unit}")


def check_positive_ints(pairs: Iterable[tuple[str, Any]]) -> None:
    """Each value is a whole number in [1, MAX_SIZE] (a size: batch, sequence length, subset)."""
    for key, value in pairs:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
        if value > MAX_SIZE:
            raise ConfigError(f"{key}={value} is out of range: at most {MAX_SIZE} (2^31 - 1)")


def check_betas(key: str, betas: Any) -> None:
    values = list(betas) if betas is not None else []
    if len(values) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in values):
        raise ConfigError(f"{key}={values} must be two numbers in [0, 1), e.g. {key}=[0.9,0.98]")


def check_pretrain(cfg: Any) -> None:
    """Every value-level check of a pretraining config (the schema already checked keys and types)."""
    from m2bert.run_folder import check_run_name
    from m2bert.train.schema import PretrainConfig

    unknown = unknown_keys(cfg, PretrainConfig)  # added with +key=value: struct mode lets those through
    if unknown:
        raise ConfigError(f"{'; '.join(unknown)}: no such pretraining setting; the settings and their values: "
                          "m2bert-pretrain --cfg job")
    check_run_name(cfg.run_name)
    check_positive_ints([("global_train_batch_size", cfg.global_train_batch_size),
                         ("device_eval_batch_size", cfg.device_eval_batch_size),
                         ("impl.device_train_microbatch_size", cfg.impl.device_train_microbatch_size),
                         ("data.max_seq_len", cfg.data.max_seq_len)])
    for key in sorted(set(cfg.model.overrides) & set(cfg.impl)):  # the run's switches have one name: impl.<key>
        raise ConfigError(f"model.overrides.{key} is a switch of the run, not of the model: use impl.{key}="
                          f"{cfg.model.overrides[key]} instead")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers={cfg.data.num_workers} must be >= 0")
    if cfg.data.num_canonical_nodes is not None and cfg.data.num_canonical_nodes < 1:
        raise ConfigError(f"data.num_canonical_nodes={cfg.data.num_canonical_nodes} must be >= 1 (or null: the "
                          f"run's number of nodes)")
    check_time("max_duration", cfg.max_duration, total=True)
    check_time("eval_interval", cfg.eval_interval)
    check_time("save_interval", cfg.save_interval)
    check_time("console_log_interval", cfg.console_log_interval, units=CONSOLE_UNITS)
    check_time("scheduler.t_warmup", cfg.scheduler.t_warmup, positive=False)
    n = cfg.eval_subset_num_batches
    if n == 0 or n < -1:
        raise ConfigError(f"eval_subset_num_batches={n}: use -1 (the whole eval split) or a number of batches >= 1")
    check_betas("optimizer.betas", cfg.optimizer.betas)
    for key in ("mlm_probability", "eval_mlm_probability"):
        p = cfg.data[key]
        if not 0.0 < p < 1.0:
            raise ConfigError(f"data.{key}={p} must be in (0, 1)")
    if not (cfg.optimizer.lr > 0 and math.isfinite(cfg.optimizer.lr)):
        raise ConfigError(f"optimizer.lr={cfg.optimizer.lr} must be a positive number")
    if cfg.data.validate_hash is not None:
        from m2bert.data.shards import AUTO_HASH, HASH_ALGOS

        if cfg.data.validate_hash not in (AUTO_HASH, *HASH_ALGOS):
            raise ConfigError(f"data.validate_hash={cfg.data.validate_hash!r}; choose one of "
                              f"{[AUTO_HASH, *HASH_ALGOS]} or null (no check)")
