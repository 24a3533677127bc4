"""Beyond one machine, against a real S3 server on loopback (moto, started by ``tests/conftest.py::s3_server``):
shards converted into the store and trained from it, checkpoints saved to and resumed from it, GLUE starting
from an export in it, and one line naming the URL when the store is wrong or down."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from m2bert import object_store
from m2bert.options import ConfigError
from tests.conftest import compose_pretrain, s3_client, s3_keys, tiny_pretrain_overrides
from tests.test_pretrain import _cli, _finish, _kill_when


@pytest.fixture(scope="module")
def s3_mds(s3, sample_mds):
    """The sample converted straight into the store (``m2bert-convert-c4 --out-root s3://…``), recording the
    order in which objects were uploaded."""
    from m2bert.data.convert_c4 import convert

    uploads: list[str] = []
    real = object_store.client

    def spying_client():
        c = real()
        upload = c.upload_file
        c.upload_file = lambda path, bucket, key, *a, **k: (upload(path, bucket, key, *a, **k), uploads.append(key))
        return c

    url = f"s3://{s3['bucket']}/c4-mds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(object_store, "client", spying_client)
        convert(str(sample_mds["raw"] / "c4" / "en"), url, splits=("train", "val"),
                tokenizer=str(sample_mds["tokenizer"]), concat_tokens=128, progress=False)
    return {"url": url, "uploads": uploads}


def test_convert_uploads_shards_then_index(s3, s3_mds, sample_mds):
    """Every shard an index lists is in the store, and each split's index.json went up after all its shards."""
    for split in ("train", "val"):
        keys = s3_keys(f"{s3['bucket']}/c4-mds/{split}/")
        index = json.loads(s3_client().get_object(Bucket=s3["bucket"], Key=f"c4-mds/{split}/index.json")["Body"].read())
        listed = {(s.get("zip_data") or s["raw_data"])["basename"] for s in index["shards"]}
        assert listed and {f"c4-mds/{split}/{n}" for n in listed} <= set(keys)
        mine = [k for k in s3_mds["uploads"] if k.startswith(f"c4-mds/{split}/")]
        assert mine[-1] == f"c4-mds/{split}/index.json" and len(mine) == len(set(mine)) > len(listed)
    with pytest.raises(FileExistsError, match=r"s3://.*/c4-mds/train exists"):  # no silent overwrite
        from m2bert.data.convert_c4 import convert

        convert(str(sample_mds["raw"] / "c4" / "en"), s3_mds["url"], splits=("train",))


def _store_overrides(sample_mds, s3_mds, tmp_path, name: str) -> list[str]:
    return tiny_pretrain_overrides(sample_mds, tmp_path, name) + [
        f"data.remote={s3_mds['url']}", f"data.local={tmp_path / f'cache-{name}'}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_store_problems_are_one_line_naming_the_url(s3, s3_mds, sample_mds, tmp_path, monkeypatch):
    """A wrong bucket, refused credentials, a stopped server: one ConfigError naming the URL, within seconds; the
    CLI prints it as one line (no traceback) and exits 2. A shard missing from the store is refused at start-up."""
    from m2bert.pretrain import check_data

    def refused(overrides: list[str]) -> str:
        cfg = compose_pretrain(_store_overrides(sample_mds, s3_mds, tmp_path, "x") + overrides)
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as e:
            check_data(cfg.data)
        assert time.monotonic() - t0 < 30
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "s3://no-such-bucket/c4-mds/train" in refused(["data.remote=s3://no-such-bucket/c4-mds"])
    assert "NoSuchBucket" in refused(["data.remote=s3://no-such-bucket/c4-mds"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert "AWS_SECRET_ACCESS_KEY" in refused([])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["env"]["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    assert "cannot reach the object store" in refused([])
    monkeypatch.setenv("S3_ENDPOINT_URL", s3["endpoint"])
    from m2bert.data.shards import ShardError

    index = json.loads(s3_client().get_object(Bucket=s3["bucket"], Key="c4-mds/train/index.json")["Body"].read())
    gone = (index["shards"][0].get("zip_data") or index["shards"][0]["raw_data"])["basename"]
    for k in s3_keys(f"{s3['bucket']}/c4-mds/train/"):  # the split without its first shard
        if not k.endswith("/" + gone):
            s3_client().copy_object(Bucket=s3["bucket"], Key=k.replace("c4-mds", "gappy"),
                                    CopySource={"Bucket": s3["bucket"], "Key": k})
    cfg = compose_pretrain(_store_overrides(sample_mds, s3_mds, tmp_path, "y") + [f"data.remote=s3://{s3['bucket']}/gappy"])
    with pytest.raises(ShardError, match=f"s3://{s3['bucket']}/gappy/train/{gone} is missing"):
        check_data(cfg.data)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "m2bert.data.convert_c4", "--source", str(sample_mds["raw"]),
                          "--out-root", "s3://no-such-bucket/c4", "--splits", "val", "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert time.monotonic() - t0 < 60
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert [line for line in out.stderr.splitlines() if "s3://no-such-bucket/c4/val" in line]


def test_store_data_and_checkpoints_resume_exactly(s3, s3_mds, sample_mds, tmp_path):
    """Shards and checkpoints both in the store: kill -9 mid-run, autoresume from the store's newest checkpoint,
    and the result equals an uninterrupted run's (weights and eval loss); an unchanged rerun is refused."""
    common = ["max_duration=12ba", "eval_interval=12ba", "save_interval=4ba", "save_num_checkpoints_to_keep=-1"]
    saves = f"s3://{s3['bucket']}/runs/resumed/checkpoints"
    _finish(_cli(_store_overrides(sample_mds, s3_mds, tmp_path, "straight") + common))
    args = _store_overrides(sample_mds, s3_mds, tmp_path, "resumed") + common + ["autoresume=true", f"save_folder={saves}"]
    proc = _cli(args, start_new_session=True)
    _kill_when(proc, lambda: any("ep0-ba4" in k for k in s3_keys(f"{s3['bucket']}/runs/resumed/checkpoints/")), 0.2)
    assert not (tmp_path / "resumed" / "summary.json").exists()
    out = _finish(_cli(args))
    assert "loading s3://" in out and "(verified" in out, out[-3000:]
    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert a["batches"] == b["batches"] == 12
    assert a["eval"][-1]["loss"] == pytest.approx(b["eval"][-1]["loss"], abs=1e-5)
    wa = load_file(tmp_path / "straight" / "hf" / "model.safetensors")
    wb = load_file(tmp_path / "resumed" / "hf" / "model.safetensors")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)
    # The store's checkpoints are an earlier run's: a fresh run saving there is refused (no clobbering).
    from m2bert.pretrain import run

    cfg = compose_pretrain(_store_overrides(sample_mds, s3_mds, tmp_path, "again") + common + [f"save_folder={saves}"])
    with pytest.raises(ConfigError, match=r"s3://.*/runs/resumed/checkpoints already holds checkpoints"):
        run(cfg)
    assert "runs/resumed/checkpoints/ep0-ba12-rank0.pt" in " ".join(s3_keys(f"{s3['bucket']}/runs/resumed/"))


def test_glue_start_from_the_store_is_downloaded_once(s3, sample_hf, tmp_path, monkeypatch, caplog):
    """start.kind=hf start.path=s3://… : the export is downloaded once into the cache, read like a local folder
    (same weights), and reused while the store lists the same files; another kind is refused in one line."""
    from m2bert.glue.start import resolve_start

    monkeypatch.setenv("M2BERT_CACHE", str(tmp_path / "cache"))
    url = f"s3://{s3['bucket']}/runs/glue-start/hf"
    object_store.upload_folder(sample_hf, url)
    local = resolve_start("hf", str(sample_hf))
    remote = resolve_start("hf", url)
    assert remote.path.startswith(str(tmp_path / "cache")) and remote.state.keys() == local.state.keys()
    for k in local.state:
        assert torch.equal(local.state[k], remote.state[k]), k
    with caplog.at_level("INFO", logger="m2bert.object_store"):
        assert resolve_start("hf", url).path == remote.path
    assert "using the cached copy" in caplog.text
    with pytest.raises(ConfigError, match="only start.kind=hf"):
        resolve_start("composer", url + "/model.safetensors")
