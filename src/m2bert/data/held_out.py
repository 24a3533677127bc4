"""Which documents are held out for evaluation when a corpus comes without a validation split: one in ``every``, chosen
by a hash of the document's text, so the choice depends on nothing else (not the order of files, the number of
workers, nor a random seed) and a rerun, or a converter and a study, hold out the same documents."""
from __future__ import annotations

import hashlib

HELD_OUT_EVERY = 20  # one document in twenty (5%)


def is_held_out(text: str, every: int = HELD_OUT_EVERY) -> bool:
    """Whether ``text`` is a held-out document: its UTF-8 SHA-1, as a number, is a multiple of ``every``."""
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % every == 0
