"""Small Composer callbacks."""
from __future__ import annotations

from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger


class EvalHistory(Callback):
    """Keeps (batch, samples, training seconds, loss, accuracy) of every MLM evaluation, for summaries,
    loss curves (vs tokens and vs wall-clock) and tests. Seconds are Composer's training wall-clock,
    which excludes evaluation."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

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
