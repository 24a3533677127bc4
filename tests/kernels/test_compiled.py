"""The kernels compiled for a GPU on a machine without one (bench/kernels_aot.py), and the GPU scripts on CPU.

What a launch would fail on (does not compile, asks for more shared memory than the device has) is
decided at compile time, and Triton compiles for a GPU without one.
"""
import importlib.util
import json
import os
import subprocess

import pytest
import torch

from m2bert import M2BertConfig
from m2bert.kernels.blockdiag_glu import monarch_glu_triton
from m2bert.kernels.seq_mixer_conv import seq_mixer_conv_triton
from tests.kernels.test_blockdiag_glu import make as make_glu
from tests.kernels.conftest import ROOT, run_python
from tests.kernels.test_seq_mixer_conv import make

pytest.importorskip("triton")


def _compile_only():
    """bench/kernels_aot.py's compile_only, through bench/kernels.py (bench/ is not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "bench" / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.kernels_aot().compile_only


def test_gpu_scripts_explain_on_cpu(tmp_path):
    """Without a GPU, the GPU scripts say that they need one (and exit non-zero) instead of failing obscurely."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: bench/gpu_check.sh runs these for real")
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr, proc.stderr
    proc = run_python(["bench/kernels.py"], {"TRITON_INTERPRET": "0"}, 120)
    assert proc.returncode != 0 and "CUDA GPU" in proc.stderr, proc.stderr[-2000:]
    proc = run_python(["bench/throughput.py", "--device", "cuda", "--lengths", "128"], {}, 120)
    assert proc.returncode != 0 and "no CUDA GPU is visible" in proc.stderr, proc.stderr[-2000:]


def test_kernel_bench_smoke_on_cpu(tmp_path):
    """bench/kernels.py end to end on tiny shapes with the interpreter (its times mean nothing)."""
    out = tmp_path / "k.json"
    proc = run_python(["bench/kernels.py", "--device", "cpu", "--lengths", "16", "300", "--batch", "1", "--hidden",
                       "8", "--dtype", "fp32", "--no-compile", "--repeats", "1", "--warmup", "0", "--json", str(out)],
                      {"TRITON_INTERPRET": "1"}, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for name in ("seq_mixer_conv", "monarch_glu"):
        row = res["kernels"][name]["16"]
        assert "fwdbwd_ms" in row["triton"] and "fwdbwd_ms" in row["eager"], row
    row = res["kernels"]["seq_mixer_conv"]["300"]  # passes by default; the tiles measured beside them
    assert "fwdbwd_ms" in row["triton_tile"] and row["fastest_triton_variant"] in ("triton", "triton_tile"), row


def test_bench_kernels_compile_and_fit_on_hopper_and_ampere(tmp_path):
    """Every kernel bench/kernels.py launches (default plans and the alternatives), forward and backward,
    compiles for sm_90 (H100/H200) and sm_80 (A100) within the shared memory of those GPUs."""
    for arch in (90, 80):
        out = tmp_path / f"sm{arch}.json"
        proc = run_python(["bench/kernels.py", "--compile-for", str(arch), "--json", str(out)],
                          {"TRITON_INTERPRET": "0"}, 900)
        res = json.loads(out.read_text())
        assert proc.returncode == 0 and res["all_fit"] and not res["errors"], (res["errors"], proc.stderr[-2000:])
        kernels = {x["kernel"] for x in res["launches"]}
        assert {"seqmix_fwd_kernel", "seqmix_bwd_kernel", "shortconv_bwd_kernel", "glu_fwd_kernel", "bd_gemm_kernel",
                "long_fwd_pass1", "long_fwd_pass2", "long_fwd_pass3",
                "long_bwd_pass1", "long_bwd_pass2", "long_bwd_pass3"} <= kernels, kernels
        lengths = {x["length"] for x in res["launches"] if x["kernel"].startswith("long_")}
        assert lengths == {512, 2048, 8192}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_variants_compile_for_hopper(dtype):
    """The specialisations the model can reach beyond the benchmark's: fp32, no padding mask, no residual
    convolution, causal filters, MLP dropout; each compiles for sm_90 and fits."""
    compile_only = _compile_only()
    cases = [make(2, 128, 64, masked=False, residual=False, dtype=dtype),
             make(2, 300, 64, masked=True, residual=True, bidirectional=False, dtype=dtype)]
    with compile_only(90) as launches:
        for args in cases:
            y = seq_mixer_conv_triton(*args)
            y.backward(torch.zeros_like(y))
        x, w_in, w_out, b = (t.detach().to(dtype).requires_grad_() for t in make_glu(2, 64, 64, 256, 4))
        y = monarch_glu_triton(x, w_in, w_out, b, dropout=0.1, training=True)
        y.backward(torch.zeros_like(y))
    assert {x.kernel for x in launches} >= {"seqmix_fwd_kernel", "seqmix_bwd_kernel", "long_fwd_pass2",
                                            "long_bwd_pass3", "glu_fwd_kernel", "bd_gemm_kernel"}
    too_big = [x for x in launches if not x.fits]
    assert not too_big, too_big


def test_model_kernels_compile_for_hopper(monkeypatch):
    """A bf16 model with kernels: triton, forward and backward, compiled (not run) for sm_90: the dtypes,
    strides and flags the layers really pass reach the compiler, and every kernel fits."""
    from m2bert import M2BertForMaskedLM
    from m2bert.model import kernel_switch

    compile_only = _compile_only()
    monkeypatch.setattr(kernel_switch, "use_triton", lambda *_: True)  # as on a GPU
    cfg = M2BertConfig.from_preset("m2-bert-tiny", hidden_size=64, intermediate_size=256, num_hidden_layers=1,
                                   max_length=300, kernels="triton")
    model = M2BertForMaskedLM(cfg).to(torch.bfloat16).train()
    with compile_only(90) as launches:
        for seqlen in (128, 300):  # a tile plan and a three-pass plan
            ids = torch.randint(5, 1000, (2, seqlen))
            attention = torch.ones_like(ids)
            attention[0, seqlen // 2:] = 0
            model(ids, attention_mask=attention, labels=ids).loss.backward()
    kernels = {x.kernel for x in launches}
    assert {"seqmix_fwd_kernel", "long_bwd_pass2", "glu_fwd_kernel", "bd_gemm_kernel"} <= kernels, kernels
    assert all(x.fits for x in launches), [x for x in launches if not x.fits]
