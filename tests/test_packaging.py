"""The built wheel is a usable package: its metadata declares the runtime dependencies (as ranges that
contain requirements.txt's pins) and it carries the config tree, the kernels and the package data."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of a copy of the sources (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "kernels", "yamls")  # src/m2bert's dev links
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    shutil.copytree(ROOT / "kernels", src / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "yamls", src / "yamls", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = src / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("m2bert-*.whl")
    return whl


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name.lower()] = next(iter(req.specifier)).version
    return pins


def test_wheel_declares_runtime_dependencies_as_ranges(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    reqs = {Requirement(r).name.lower(): Requirement(r) for r in meta.get_all("Requires-Dist") or []
            if "extra ==" not in r}
    needed = {"torch", "mosaicml", "mosaicml-streaming", "hydra-core", "omegaconf", "transformers", "datasets",
              "safetensors", "matplotlib", "tokenizers", "numpy"}
    assert needed <= set(reqs), sorted(needed - set(reqs))
    assert "wandb" in reqs["mosaicml"].extras
    pins = _pins()
    for name, req in reqs.items():
        assert len(req.specifier) >= 1 and all(s.operator != "==" for s in req.specifier), req  # ranges, not pins
        if name in pins:
            assert req.specifier.contains(pins[name]), (req, pins[name])
    assert reqs["transformers"].specifier.contains("5.1.0")  # the model also runs under transformers 5


def test_wheel_carries_configs_kernels_and_package_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    yamls = {p.relative_to(ROOT / "yamls").as_posix() for p in (ROOT / "yamls").rglob("*.yaml")}
    assert {f"m2bert/yamls/{y}" for y in yamls} <= names
    assert "m2bert/yamls/pretrain.yaml" in names and "m2bert/yamls/model/m2_bert_tiny.yaml" in names
    kernels = {p.name for p in (ROOT / "kernels").glob("*.py")}
    assert {f"m2bert/kernels/{k}" for k in kernels} <= names
    assert "m2bert/kernels/seq_mixer_conv.py" in names and "m2bert/model/kernel_switch.py" in names
    if (ROOT / "src" / "m2bert" / "glue" / "published.json").exists():
        assert "m2bert/glue/published.json" in names
