"""Train an uncased WordPiece tokenizer with BERT's special ids. See m2bert.data.tokenizer."""
from m2bert.data.tokenizer import main

if __name__ == "__main__":
    raise SystemExit(main())
