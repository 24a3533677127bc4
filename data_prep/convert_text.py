"""Convert your own text (.txt, JSON lines, a datasets dataset) to MDS shards. See m2bert.data.convert_text."""
from m2bert.data.convert_text import main

if __name__ == "__main__":
    raise SystemExit(main())
