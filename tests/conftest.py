"""Shared fixtures. Tests that need ../shared skip with a clear reason when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m2bert.paths import shared_dir

SHARED = shared_dir()


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the read-only ../shared folder beside the repository), which is absent")
    return path


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="session")
def sample_mds(tmp_path_factory):
    """The offline sample, a WordPiece tokenizer trained on it, and its pre-tokenised MDS shards.

    Built once per session through the same code paths as C4 (make_sample → train_wordpiece →
    convert), so pretraining tests run on real shards without network or ../shared.
    """
    import glob

    from m2bert.data.convert_c4 import convert
    from m2bert.data.sample import make_sample
    from m2bert.data.tokenizer import train_wordpiece

    root = tmp_path_factory.mktemp("sample")
    make_sample(root / "raw")
    corpus = sorted(glob.glob(str(root / "raw" / "c4" / "en" / "*.json")))
    train_wordpiece(corpus, root / "tokenizer", vocab_size=2048)
    convert(str(root / "raw" / "c4" / "en"), str(root / "mds"), splits=("train", "val"),
            tokenizer=str(root / "tokenizer"), concat_tokens=128, progress=False)
    return {"root": root, "raw": root / "raw", "mds": root / "mds", "tokenizer": root / "tokenizer"}


def copy_shards_as_converted(src: Path, dst: Path) -> Path:
    """A private copy of MDS shards as m2bert-convert-c4 wrote them: compressed only. Readers decompress
    shards next to the originals, so after any test has read ``sample_mds`` its folder also holds raw
    ``.mds`` files, which readers then prefer; tests that damage a compressed shard must not have them."""
    import shutil

    shutil.copytree(src, dst)
    for raw in dst.rglob("*.mds"):
        if raw.with_name(raw.name + ".zstd").exists():
            raw.unlink()
    return dst


# A tiny pretraining run on the sample shards: what most pretraining tests share (each adds its own keys).
TINY_PRETRAIN = {
    "global_train_batch_size": 16, "impl.device_train_microbatch_size": 16, "device_eval_batch_size": 64,
    "eval_subset_num_batches": 2, "optimizer.lr": "2e-3", "scheduler.t_warmup": "0.1dur", "save_interval": "1000ba",
    "console_log_interval": "1000ba",
}


def tiny_pretrain_overrides(sample_mds, run_root: Path, run_name: str, model: str = "m2_bert_tiny",
                            settings: dict | None = None) -> list[str]:
    """Overrides for a tiny pretraining run on the ``sample_mds`` shards; ``settings`` replace TINY_PRETRAIN's."""
    values = {**TINY_PRETRAIN, **(settings or {})}
    return [f"model={model}", "data=sample", f"data.local={sample_mds['mds']}", f"data.tokenizer={sample_mds['tokenizer']}",
            *(f"{k}={v}" for k, v in values.items()), f"run_root={run_root}", f"run_name={run_name}"]


def compose_pretrain(overrides: list[str]):
    """yamls/pretrain.yaml composed with overrides (m2bert.cli.compose, as the demo and the CLI compose it)."""
    from m2bert.cli import compose

    return compose("pretrain", overrides)


def compose_glue(overrides: list[str]):
    """yamls/glue.yaml composed with overrides."""
    from m2bert.cli import compose

    return compose("glue", overrides)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    """A randomly initialised m2-bert-tiny MLM with BERT's vocabulary, saved as an HF directory."""
    from m2bert import M2BertConfig, M2BertForMaskedLM
    from m2bert.data.tokenizer import load_tokenizer

    out = tmp_path_factory.mktemp("tiny") / "hf"
    tok = load_tokenizer(shared_path("data", "bert-base-uncased", "vocab.txt"))
    torch.manual_seed(0)
    M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=30528)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sample_hf(sample_mds, tmp_path_factory) -> Path:
    """A randomly initialised m2-bert-tiny MLM with the sample's tokenizer (no ../shared needed), as an HF directory:
    a start for tiny GLUE runs on the sample's tasks."""
    from m2bert import M2BertConfig, M2BertForMaskedLM
    from m2bert.data.tokenizer import load_tokenizer

    out = tmp_path_factory.mktemp("sample_hf") / "hf"
    torch.manual_seed(0)
    M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=2048)).save_pretrained(out)
    load_tokenizer(sample_mds["tokenizer"]).save_pretrained(out)
    return out


def hold_lock(folder: Path):
    """A live process holding ``folder/run.lock`` as a run would (created with O_EXCL: pid and host in it); the
    caller kills it. Written without m2bert, so it stands for any other run of the same folder."""
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    code = ("import json, os, socket, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
            "os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'started': 'now'}).encode())\n"
            "os.close(fd)\nprint('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder / "run.lock")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc
