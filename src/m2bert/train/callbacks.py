"""Small Composer callbacks."""
from __future__ import annotations

import logging
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger

log = logging.getLogger(__name__)


class Recorder(Callback):
    """A callback that keeps ``records`` (plain dicts) for the run's summary and charts. The records travel in
    checkpoints (Composer saves every callback's ``state_dict``), so a resumed run keeps its whole curve, the
    points from before the resume included."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = list(state.get("records", []))


class EvalHistory(Recorder):
    """Keeps (batch, samples, training seconds, loss, accuracy) of every MLM evaluation, for summaries,
    loss curves (vs tokens and vs wall-clock) and tests. Seconds are Composer's training wall-clock,
    which excludes evaluation."""

    def eval_end(self, state: State, logger: Logger) -> None:
        metrics = state.eval_metrics.get("eval", {})
        if "LanguageCrossEntropy" not in metrics:
            return
        wct = state.timestamp.total_wct
        self.records.append({
            "batch": int(state.timestamp.batch),
            "samples": int(state.timestamp.sample),
            "seconds": round(wct.total_seconds(), 3) if wct is not None else None,
            "loss": float(metrics["LanguageCrossEntropy"].compute()),
            "accuracy": float(metrics["MaskedAccuracy"].compute()) if "MaskedAccuracy" in metrics else None,
        })


class TrainLossHistory(Recorder):
    """The training loss (Composer's ``loss/train/total``, already a float on the host) at up to ``points`` evenly
    spaced batches, for the loss chart (``loss.png``) and the summary's ``train_loss``."""

    def __init__(self, points: int = 1000) -> None:
        super().__init__()
        self.points = points
        self.every = 1

    def fit_start(self, state: State, logger: Logger) -> None:
        from composer.core import TimeUnit

        if state.max_duration is not None and state.max_duration.unit == TimeUnit.BATCH:
            self.every = max(1, int(state.max_duration.value) // self.points)

    def batch_end(self, state: State, logger: Logger) -> None:
        batch = int(state.timestamp.batch)
        loss = (getattr(state, "total_loss_dict", None) or {}).get("loss/train/total")
        if loss is not None and batch % self.every == 0:
            self.records.append({"batch": batch, "samples": int(state.timestamp.sample), "loss": float(loss)})


class ProgressLine(Callback):
    """One log line per ``interval`` (a Composer time string in ba or ep): ``name: batch 50 of 3ep, train loss
    0.6931``. What a short fine-tuning job shows instead of Composer's console logger, which prints
    the whole config and a line per metric at every log point."""

    def __init__(self, name: str, interval: str) -> None:
        from composer.core import Time

        self.name = name
        self.interval = Time.from_timestring(interval)

    def _line(self, state: State) -> None:
        loss = (getattr(state, "total_loss_dict", None) or {}).get("loss/train/total")
        log.info("%s: batch %d of %s%s", self.name, int(state.timestamp.batch), state.max_duration,
                 f", train loss {loss:.4f}" if loss is not None else "")

    def batch_end(self, state: State, logger: Logger) -> None:
        from composer.core import TimeUnit

        if self.interval.unit == TimeUnit.BATCH and int(state.timestamp.batch) % int(self.interval.value) == 0:
            self._line(state)

    def epoch_end(self, state: State, logger: Logger) -> None:
        from composer.core import TimeUnit

        if self.interval.unit == TimeUnit.EPOCH and int(state.timestamp.epoch) % int(self.interval.value) == 0:
            self._line(state)


class ResumableRNG(Callback):
    """Restores every rank's RNG state when a run resumes mid-epoch.

    Composer restores RNG mid-epoch only when it fast-forwards the dataloader itself; a
    StreamingDataset resumes on its own, and then Composer skips the restore, so dropout
    masks after an autoresume would differ from an uninterrupted run. This callback saves
    the states with each checkpoint and reapplies them before the first resumed batch.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        from composer.utils import reproducibility

        return {"rng": reproducibility.get_rng_state()}  # gathered over ranks

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state.get("rng")

    def batch_start(self, state: State, logger: Logger) -> None:
        if self._pending is not None:
            from composer.utils import reproducibility

            reproducibility.load_rng_state(self._pending)
            self._pending = None


def implicit_filters(model: Any) -> dict[str, Any]:
    """Every implicit filter of ``model``, named ``layer<i>.long_conv`` / ``layer<i>.residual_long_conv``."""
    import re

    from m2bert.model.implicit_filter import ImplicitFilter

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, ImplicitFilter):
            layer = re.search(r"layers\.(\d+)\.", name)
            out[f"layer{layer.group(1) if layer else '?'}.{name.rsplit('.', 1)[-1]}"] = module
    return out


def sharded(model: Any) -> bool:
    """Whether FSDP (1: wrapper modules, 2: DTensor parameters) shards ``model``: a filter's weights are then not
    whole on any rank outside FSDP's own forward."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules()) or any(
        isinstance(p, DTensor) for p in model.parameters())


def filter_stats(model: Any) -> dict[str, dict[str, float]]:
    """Per implicit filter: its energy at lags ≥ 3 (``ImplicitFilter.tail_energy``) and its mean |freq|."""
    return {name: {"energy": f.tail_energy(), "freq": float(f.freq.detach().abs().mean())}
            for name, f in implicit_filters(model).items()}


class FilterEnergy(Recorder):
    """Logs, at every evaluation and to every logger, each implicit filter's energy at lags ≥ 3 relative to its
    value at the start of training (``filter_energy/<layer>.<conv>``) and its mean sine frequency
    (``filter_freq/...``): whether the long convolutions stay long. A recipe whose filters decay to ~0 leaves M2
    mixing tokens only through its short convolutions, which the MLM loss does not show (README, "The filters'
    recipe"). The start values travel in checkpoints with the records, so a resumed run keeps its reference."""

    def __init__(self) -> None:
        super().__init__()
        self.initial: dict[str, dict[str, float]] | None = None
        self._told = False

    def init(self, state: State, logger: Logger) -> None:
        self.initial = filter_stats(state.model)  # before Composer wraps the model (FSDP shards it later)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "initial": self.initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.initial = state.get("initial") or self.initial

    def eval_end(self, state: State, logger: Logger) -> None:
        if not self.initial:
            return  # no implicit filters (the BERT baseline)
        if sharded(state.model):
            if not self._told:
                log.info("filter energy is not measured under FSDP (the filters' weights are sharded)")
                self._told = True
            return
        now = filter_stats(state.model)
        initial = self.initial
        # A filter that starts at zero (``*_init_scale=0``) has no relative energy: its absolute one is logged.
        relative = {name: s["energy"] / initial[name]["energy"] if initial[name]["energy"] > 0 else None
                    for name, s in now.items()}
        logger.log_metrics({**{f"filter_energy/{k}": v for k, v in relative.items() if v is not None},
                            **{f"filter_energy_abs/{k}": s["energy"] for k, s in now.items()},
                            **{f"filter_freq/{k}": s["freq"] for k, s in now.items()}})
        self.records.append({"batch": int(state.timestamp.batch), "energy_relative": relative,
                             "energy": {k: s["energy"] for k, s in now.items()},
                             "freq": {k: s["freq"] for k, s in now.items()}})
