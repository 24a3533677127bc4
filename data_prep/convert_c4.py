"""Convert C4 to MosaicML streaming (MDS) shards. See m2bert.data.convert_c4 for the options."""
from m2bert.data.convert_c4 import main

if __name__ == "__main__":
    raise SystemExit(main())
