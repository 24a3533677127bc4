"""The Triton kernels' switch and its promises, plus the interpreted kernel suite (tests/kernels/).

Triton reads ``TRITON_INTERPRET`` when it is first imported, which ``import torch`` /
``transformers`` may already have done in this process, so the interpreted suite runs in a
subprocess started with the variable set.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m2bert import M2BertConfig, M2BertModel
from m2bert.kernels.dispatch import use_triton

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("triton")


def _run(code_or_args, env_extra, timeout):
    env = {**os.environ, **env_extra}
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="tests/kernels runs in this process already")
def test_interpreted_kernel_suite():
    """Forward and gradients of both kernels vs the PyTorch reference, and the model, interpreted on CPU."""
    proc = _run(["-m", "pytest", "tests/kernels", "-p", "no:cacheprovider"], {"TRITON_INTERPRET": "1"}, 900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, summary


def test_switch():
    assert not use_triton("torch", "cpu")
    assert not use_triton("auto", "cpu")
    assert use_triton("auto", "cuda")  # triton is installed (importorskip above)
    assert not use_triton("torch", "cuda")
    with pytest.raises(ValueError, match="kernels="):
        use_triton("fast", "cpu")


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="kernels: triton needs a CUDA GPU or TRITON_INTERPRET=1"):
        use_triton("triton", "cpu")
    model = M2BertModel(M2BertConfig.from_preset("m2-bert-tiny", kernels="triton")).eval()
    with pytest.raises(RuntimeError, match="kernels: triton needs a CUDA GPU or TRITON_INTERPRET=1"):
        model(torch.ones(1, 8, dtype=torch.long))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter enabled from process start")
def test_interpreter_switched_on_too_late_is_a_clear_error(monkeypatch):
    import triton  # noqa: F401  (imported without the variable, as in any ordinary process)

    from m2bert.kernels._loader import kernel_module

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="before Python starts"):
        kernel_module("blockdiag_glu", torch.device("cpu"))


def test_import_and_cpu_run_touch_no_triton_driver():
    code = (
        "import sys, torch, m2bert\n"
        "import m2bert.kernels, m2bert.kernels.dispatch, m2bert.kernels.seq_mixer_conv, m2bert.kernels.blockdiag_glu\n"
        "from m2bert import M2BertConfig, M2BertModel\n"
        "m = M2BertModel(M2BertConfig.from_preset('m2-bert-tiny', kernels='auto')).eval()\n"
        "m(torch.ones(1, 8, dtype=torch.long))\n"
        "if 'triton.runtime.driver' in sys.modules:\n"
        "    from triton.runtime.driver import driver\n"
        "    assert driver.default._obj is None, 'a Triton driver was initialised'\n"
        "print('ok')\n"
    )
    proc = _run(code, {"TRITON_INTERPRET": "0"}, 300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_gpu_scripts_explain_on_cpu(tmp_path):
    """Without a GPU, the GPU scripts say that they need one (and exit non-zero) instead of failing obscurely."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: bench/gpu_check.sh runs these for real")
    proc = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr, proc.stderr
    proc = _run(["bench/kernels.py"], {"TRITON_INTERPRET": "0"}, 120)
    assert proc.returncode != 0 and "CUDA GPU" in proc.stderr, proc.stderr[-2000:]
    proc = _run(["bench/throughput.py", "--device", "cuda", "--lengths", "128"], {}, 120)
    assert proc.returncode != 0 and "no CUDA GPU is visible" in proc.stderr, proc.stderr[-2000:]


def test_kernel_bench_smoke_on_cpu(tmp_path):
    """bench/kernels.py end to end on tiny shapes with the interpreter (its times mean nothing)."""
    out = tmp_path / "k.json"
    proc = _run(["bench/kernels.py", "--device", "cpu", "--lengths", "16", "300", "--batch", "1", "--hidden", "8",
                 "--dtype", "fp32", "--no-compile", "--repeats", "1", "--warmup", "0", "--json", str(out)],
                {"TRITON_INTERPRET": "1"}, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    res = json.loads(out.read_text())
    for name in ("seq_mixer_conv", "monarch_glu"):
        row = res["kernels"][name]["16"]
        assert "fwdbwd_ms" in row["triton"] and "fwdbwd_ms" in row["eager"], row
    row = res["kernels"]["seq_mixer_conv"]["300"]  # passes by default; the tiles measured beside them
    assert "fwdbwd_ms" in row["triton_tile"] and row["fastest_triton_variant"] in ("triton", "triton_tile"), row


# Compiling for a GPU needs no GPU: the checks a launch would fail on (does not compile, asks for more
# shared memory than the device has) are decided at compile time (kernels/aot.py).
def test_bench_kernels_compile_and_fit_on_hopper_and_ampere(tmp_path):
    """Every kernel bench/kernels.py launches (default plans and the alternatives), forward and backward,
    compiles for sm_90 (H100/H200) and sm_80 (A100) within the shared memory of those GPUs."""
    for arch in (90, 80):
        out = tmp_path / f"sm{arch}.json"
        proc = _run(["bench/kernels.py", "--compile-for", str(arch), "--json", str(out)], {"TRITON_INTERPRET": "0"},
                    900)
        import json

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
    from m2bert.kernels.aot import compile_only
    from m2bert.kernels.blockdiag_glu import monarch_glu_triton
    from m2bert.kernels.seq_mixer_conv import seq_mixer_conv_triton
    from tests.kernels.test_blockdiag_glu import make as make_glu
    from tests.kernels.test_seq_mixer_conv import make

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
    from m2bert.kernels import dispatch
    from m2bert.kernels.aot import compile_only

    monkeypatch.setattr(dispatch, "use_triton", lambda *_: True)  # as on a GPU
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
