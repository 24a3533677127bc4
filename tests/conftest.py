"""Shared fixtures. Tests that need ../shared skip with a clear reason when it is absent."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

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


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto's, in a thread of this process) on 127.0.0.1 with one bucket: what the
    object-store tests read and write. It stops when the session ends (and with the process, whatever happens);
    the tests reach nothing else. Skips only if moto cannot start."""
    try:
        import boto3
        from moto import settings as moto_settings
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        pytest.skip(f"the loopback S3 server needs moto[server] and boto3 ({e}); pip install -r requirements.txt")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except OSError as e:
        pytest.skip(f"moto's S3 server cannot start on 127.0.0.1 ({e})")
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    setup = {"endpoint_url": endpoint, "aws_access_key_id": "setup", "aws_secret_access_key": "setup",
             "region_name": "us-east-1"}
    bucket = "m2bert-test"
    boto3.client("s3", **setup).create_bucket(Bucket=bucket)
    # Credentials are checked (as a real store does), so a test can see wrong ones refused: an IAM user with
    # every right, created before moto starts enforcing authentication.
    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="m2bert")
    iam.put_user_policy(UserName="m2bert", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="m2bert")["AccessKey"]
    enforced = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    env = {"S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1"}
    yield {"env": env, "bucket": bucket, "endpoint": endpoint}
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = enforced
    server.stop()


@pytest.fixture(scope="module")
def s3(s3_server):
    """``s3_server`` with its endpoint and credentials in the environment (this module's tests and their
    subprocesses), the way boto3, streaming (``S3_ENDPOINT_URL``) and Composer's S3ObjectStore read them; the
    machine's own AWS settings are hidden so nothing else is reached."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        for key, value in s3_server["env"].items():
            mp.setenv(key, value)
        yield s3_server


def s3_client():
    """A boto3 client of the server named in the environment (the ``s3`` fixture's)."""
    import os

    import boto3

    return boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])


def s3_keys(prefix: str) -> list[str]:
    """Every key under ``s3://<bucket>/<prefix>`` (``prefix`` starts with the bucket)."""
    bucket, _, key = prefix.partition("/")
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
