"""``loss.png`` beside a pretraining run's ``summary.json``: training and eval MLM loss against tokens seen, so a
run's progress is one look (matplotlib, Agg: no display needed)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from m2bert.atomic import atomic_write_bytes


def write_loss_chart(path: str | Path, train: list[dict[str, Any]], evals: list[dict[str, Any]],
                     tokens_per_sample: int, title: str) -> str:
    """Plot ``train`` (records with ``samples`` and ``loss``) and ``evals`` (likewise) against tokens; written
    atomically. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for records, label, style in ((train, "train", "-"), (evals, "eval", "o-")):
        if records:
            ax.plot([r["samples"] * tokens_per_sample for r in records], [r["loss"] for r in records], style,
                    label=label, markersize=3, linewidth=1)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("MLM loss (cross-entropy)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return str(path)


def save_png(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """A matplotlib figure as a PNG file, written atomically (a chart is whole or absent)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
