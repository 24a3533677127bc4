"""The model's kernel switch and its promises, plus the interpreted kernel suite (the other files here).

Triton reads ``TRITON_INTERPRET`` when it is first imported, which ``import torch`` /
``transformers`` may already have done in this process, so the interpreted suite runs in a
subprocess started with the variable set (tests/kernels/conftest.py lists its files).
"""
import os

import pytest
import torch

from m2bert import M2BertConfig, M2BertModel
from m2bert.model.kernel_switch import use_triton
from tests.kernels.conftest import INTERPRETED, run_python

pytest.importorskip("triton")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="tests/kernels runs in this process already")
def test_interpreted_kernel_suite():
    """Forward and gradients of both kernels vs the PyTorch reference, and the model, interpreted on CPU."""
    proc = run_python(["-m", "pytest", "tests/kernels", "-p", "no:cacheprovider", "-rA"], {"TRITON_INTERPRET": "1"}, 900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, summary
    ran = {line.split()[1].split("::")[0].rsplit("/", 1)[-1] for line in proc.stdout.splitlines()
           if line.startswith("PASSED ")}
    assert ran == set(INTERPRETED), ran  # exactly the interpreted files, each with a passing test


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
        "import m2bert.kernels, m2bert.model.kernel_switch, m2bert.kernels.seq_mixer_conv, m2bert.kernels.blockdiag_glu\n"
        "from m2bert import M2BertConfig, M2BertModel\n"
        "m = M2BertModel(M2BertConfig.from_preset('m2-bert-tiny', kernels='auto')).eval()\n"
        "m(torch.ones(1, 8, dtype=torch.long))\n"
        "if 'triton.runtime.driver' in sys.modules:\n"
        "    from triton.runtime.driver import driver\n"
        "    assert driver.default._obj is None, 'a Triton driver was initialised'\n"
        "print('ok')\n"
    )
    proc = run_python(["-c", code], {"TRITON_INTERPRET": "0"}, 300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
