"""The model cards (``README.md``) of our exports: what the model is, how it was trained, how to load it
(``import m2bert`` first: it registers the Auto classes; or the portable code, ``m2bert.portable``) and its eval
numbers when known."""
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
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", "", WITHOUT_M2BERT, ""]
    return "\n".join(lines)


# Both cards: how a folder without code loads where m2bert is not installed (m2bert.portable appends the section
# that says how a portable copy loads).
WITHOUT_M2BERT = (
    "Without `import m2bert`, transformers does not know the model type `m2_bert` and stops (\"does not recognize "
    "this architecture ... upgrade Transformers\"). To share the model with people who do not install m2bert, "
    "`m2bert-make-portable THIS_FOLDER OUT` writes a copy holding the model's code, which plain transformers loads "
    "with `trust_remote_code=True` (see \"Loading without m2bert\" in that copy's card).")


def sentence_transformer_card(title: str, pooling: str, normalize: bool, dimensions: int, max_seq_length: int,
                              model_max_length: int, architecture: str) -> str:
    """The card of a sentence-transformers export: sentence-transformers' front matter (the Hub files it under
    sentence similarity), what the pipeline is and how to load it."""
    steps = f"M2-BERT encoder → {pooling} pooling" + (" → L2 normalisation" if normalize else "")
    return "\n".join([
        "---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
        "tags:", "- sentence-transformers", "- sentence-similarity", "- feature-extraction", "- m2-bert", "---", "",
        f"# {title}", "",
        f"A [sentence-transformers](https://www.sbert.net) model: {steps}, {dimensions}-dimensional embeddings. "
        f"Inputs are truncated at {max_seq_length} tokens (the encoder takes up to {model_max_length}; raise "
        f"`model.max_seq_length` to use more).", "",
        "M2-BERT (Monarch Mixer BERT; Fu et al., NeurIPS 2023) replaces attention by a gated bidirectional long "
        "convolution and the MLP by block-diagonal Monarch matrices. This encoder is padding-invariant: a text's "
        "embedding does not depend on the batch it is encoded in (sentence-transformers pads each batch to its "
        "longest text).", "",
        "## Loading", "", "```python",
        "import m2bert  # registers the M2-BERT classes with transformers' Auto* (needed first)",
        "from sentence_transformers import SentenceTransformer", "",
        'model = SentenceTransformer("path/to/this/folder")',
        'embeddings = model.encode(["a sentence", "another one"])', "",
        "# or m2bert's loader, which refuses a folder whose modules.json names code to import:",
        "from m2bert.embeddings.sentence_transformers import load_sentence_transformer", "",
        'model = load_sentence_transformer("path/to/this/folder")', "```", "",
        WITHOUT_M2BERT, "",
        "## Architecture", "", "```", architecture, "```", ""])
