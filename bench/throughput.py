"""Model throughput, M2-BERT vs BERT: a thin wrapper around ``python -m m2bert.bench.throughput``.

    python bench/throughput.py --device cuda --kernels triton --json bench/results/gpu/throughput_triton.json

Every option is the module's (``--help``); on a machine without a GPU, ``--device cuda`` says so and exits.
"""
from m2bert.bench.throughput import main

if __name__ == "__main__":
    main()
