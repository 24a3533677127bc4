"""`make demo`: the whole pipeline end to end on the embedded sample, offline, on CPU."""
from __future__ import annotations

import logging

log = logging.getLogger("m2bert.demo")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("m2bert demo: not yet — the data, pretraining and GLUE pipeline issues have not landed. "
             "The model is available: `from m2bert import M2BertForMaskedLM`.")


if __name__ == "__main__":
    main()
