"""The model card (``README.md``) of a Hugging Face export: what the model is, how it was trained, how
to load it (``import m2bert`` first: it registers the Auto classes) and its eval numbers when known."""
from __future__ import annotations

from typing import Any


def _rows(items: dict[str, Any]) -> list[str]:
    return [f"| {k} | {v} |" for k, v in items.items() if v is not None]


def model_card(title: str, summary: str, training: dict[str, Any], auto_class: str,
               evals: dict[str, Any] | None = None, labels: dict[int, str] | None = None) -> str:
    """Markdown text; ``training`` and ``evals`` are key → value rows (``None`` values are left out)."""
    lines = [f"# {title}", "", summary, "",
             "M2-BERT (Monarch Mixer BERT; Fu et al., NeurIPS 2023): attention replaced by a gated bidirectional "
             "long convolution with implicit filters, the MLP by block-diagonal Monarch matrices. Trained with "
             "[m2bert](https://github.com/HazyResearch/m2)'s reimplementation (Composer + Hydra).", "",
             "## Training", "", "| setting | value |", "|---|---|", *_rows(training), ""]
    if labels:
        lines += ["Labels: " + ", ".join(f"{i} = {name}" for i, name in sorted(labels.items())), ""]
    lines += ["## Evaluation", ""]
    if evals:
        lines += ["| metric | value |", "|---|---|", *_rows(evals), ""]
    else:
        lines += ["No evaluation numbers were recorded for this export.", ""]
    lines += ["## Loading", "", "```python",
              "import m2bert  # registers the M2-BERT classes with transformers' Auto* (needed first)",
              f"from transformers import {auto_class}, AutoTokenizer", "",
              f'model = {auto_class}.from_pretrained("path/to/this/folder")  # dtype=torch.bfloat16 works too',
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", ""]
    return "\n".join(lines)
