"""Write the offline sample (C4-layout corpus + GLUE-layout tasks) from docstrings. See m2bert.data.sample."""
from m2bert.data.sample import main

if __name__ == "__main__":
    raise SystemExit(main())
