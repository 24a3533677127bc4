"""Which long-convolution form is fastest, per sequence length: the table behind ``long_conv_impl=auto``.

Times forward + backward of (a) the long convolution alone (filters → spectrum → convolution, as a
training step runs it) and (b) one whole M2-BERT layer (sequence mixer + dimension mixer, PyTorch path,
padding mask of ones as in pretraining), for each form (fft, monarch, direct) at each length; forms
alternate call by call in one process so that all see the same machine. ``direct`` builds an
(L, L, channels) Toeplitz tensor, so it is skipped where that exceeds ``--direct-max-mib``.
Prints JSON: per part and length, each form's median seconds and the fastest form.

    OMP_NUM_THREADS=1 python bench/long_conv_forms.py --json bench/results/long_conv_forms_cpu.json
    python bench/long_conv_forms.py --lengths 64,128 --long-lengths '' --parts conv --reps 2   # quick look
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

import torch

from m2bert import M2BertConfig, cli_help
from m2bert.atomic import atomic_write_json
from m2bert.model.long_conv import long_conv
from m2bert.model.modeling import M2BertLayer

log = logging.getLogger("bench.long_conv_forms")
FORMS = ("fft", "monarch", "direct")


def conv_call(batch: int, length: int, width: int, form: str) -> Callable[[], None]:
    """Forward + backward of the bidirectional long convolution alone, gradients to input and filters."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, length, width, generator=g, requires_grad=True)
    k_fwd = torch.randn(length, width, generator=g, requires_grad=True)
    k_rev = torch.randn(length, width, generator=g, requires_grad=True)
    bias = torch.randn(width, generator=g, requires_grad=True)
    grad = torch.randn(batch, length, width, generator=g)

    def call() -> None:
        long_conv(u, k_fwd, k_rev, bias, form).backward(grad)
        for t in (u, k_fwd, k_rev, bias):
            t.grad = None
    return call


def layer_calls(batch: int, length: int, width: int, preset: str) -> Callable[[str], Callable[[], None]]:
    """Forward + backward of one M2-BERT layer (one set of weights, the form switched per call)."""
    cfg = M2BertConfig.from_preset(preset, hidden_size=width, intermediate_size=4 * width, kernels="torch",
                                   max_position_embeddings=length, long_conv_l_max=length)
    torch.manual_seed(0)
    layer = M2BertLayer(cfg).train()
    hidden = torch.randn(batch, length, width, requires_grad=True)
    mask = torch.ones(batch, length, 1)
    grad = torch.randn(batch, length, width)

    def for_form(form: str) -> Callable[[], None]:
        def call() -> None:
            layer.sequence_mixer.impl = form
            layer(hidden, mask).backward(grad)
            layer.zero_grad(set_to_none=True)
            hidden.grad = None
        return call
    return for_form


def time_alternating(calls: dict[str, Callable[[], None]], reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per call, the forms taking turns (warm-up rounds untimed)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + reps):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--batch", type=int, default=16, help="sequences per call at --lengths")
    p.add_argument("--lengths", default="64,128,256,512,1024,2048", help="comma-separated lengths at --batch")
    p.add_argument("--long-lengths", default="8192", help="comma-separated lengths at batch 1 ('' for none)")
    p.add_argument("--width", type=int, default=768, help="channels (hidden size; 768 = m2-bert-base-80m)")
    p.add_argument("--preset", default="m2-bert-base-80m", help="M2BertConfig preset of the layer")
    p.add_argument("--parts", default="conv,layer", help="conv (the long convolution alone), layer (one M2 layer)")
    p.add_argument("--forms", default=",".join(FORMS), help="forms compared")
    p.add_argument("--reps", type=int, default=3, help="timed calls per form")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per form")
    p.add_argument("--direct-max-mib", type=float, default=256.0,
                   help="skip direct where its (L, L, width) fp32 Toeplitz is larger")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    forms = [f for f in args.forms.split(",") if f]
    parts = [x for x in args.parts.split(",") if x]
    shapes = [(args.batch, int(n)) for n in args.lengths.split(",") if n]
    shapes += [(1, int(n)) for n in args.long_lengths.split(",") if n]
    rows = []
    for part in parts:
        for batch, length in shapes:
            toeplitz_mib = length * length * args.width * 4 / 2**20
            run = [f for f in forms if f != "direct" or toeplitz_mib <= args.direct_max_mib]
            if part == "conv":
                calls = {f: conv_call(batch, length, args.width, f) for f in run}
            else:
                for_form = layer_calls(batch, length, args.width, args.preset)
                calls = {f: for_form(f) for f in run}
            seconds = time_alternating(calls, args.reps, args.warmup)
            fastest = min(seconds, key=seconds.get)
            row = {"part": part, "batch": batch, "length": length,
                   "seconds": {f: round(s, 5) for f, s in seconds.items()}, "fastest": fastest,
                   "skipped": [f for f in forms if f not in run]}
            log.info("%s B=%d L=%d: %s -> %s", part, batch, length, row["seconds"], fastest)
            rows.append(row)
    result = {
        "benchmark": "forward+backward seconds per call, fp32, forms alternating (median)",
        "device": "cpu", "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "width": args.width, "preset": args.preset, "reps": args.reps, "warmup": args.warmup,
        "torch": torch.__version__, "rows": rows,
    }
    if args.json:
        atomic_write_json(args.json, result)
    print(json.dumps(result, indent=2))  # this tool's output


if __name__ == "__main__":
    main()
