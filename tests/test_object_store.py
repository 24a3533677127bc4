"""Beyond one machine, against a real S3 server on loopback (moto, started by ``tests/conftest.py::s3_server``):
shards converted into the store and trained from it, checkpoints saved to and resumed from it, GLUE starting
from an export in it, and one line naming the URL when the store is wrong or down."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from m2bert import object_store
from m2bert.options import ConfigError
from tests.conftest import compose_pretrain, s3_client, s3_keys, tiny_pretrain_overrides
from tests.test_pretrain import _assert_same_training, _cli, _finish, _kill_when

ROOT = Path(__file__).resolve().parents[1]


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


def _reshard(split: Path, out: Path, per_shard: int, rows: int | None = None) -> None:
    """The MDS split ``split`` (its first ``rows`` rows) rewritten into ``out`` as zstd shards of exactly
    ``per_shard`` rows each (the last: what is left), hashed as m2bert-convert-c4 hashes them."""
    from streaming import LocalDataset, MDSWriter
    from streaming.base.compression import decompress

    index = json.loads((split / "index.json").read_text())
    raw = out.with_name(out.name + "-raw")  # LocalDataset reads raw shards: a copy with each one decompressed
    raw.mkdir(parents=True)
    for shard in index["shards"]:
        name, packed = shard["raw_data"]["basename"], shard.get("zip_data")
        data = (split / name).read_bytes() if (split / name).exists() else \
            decompress(shard["compression"], (split / packed["basename"]).read_bytes())
        (raw / name).write_bytes(data)
    (raw / "index.json").write_text(json.dumps(index))
    rows_in = LocalDataset(str(raw))
    first = index["shards"][0]
    with MDSWriter(out=str(out), columns=dict(zip(first["column_names"], first["column_encodings"])),
                   compression="zstd", hashes=["sha1", "xxh64"]) as writer:
        row_bytes = len(writer.encode_sample(rows_in[0])) + writer.extra_bytes_per_sample  # rows are fixed-size
        writer.size_limit = writer.extra_bytes_per_shard + per_shard * row_bytes
        for i in range(len(rows_in) if rows is None else rows):
            writer.write(rows_in[i])


@pytest.fixture(scope="module")
def s3_sharded(s3, sample_mds, tmp_path_factory) -> str:
    """The sample's first 512 training rows as 4 shards of 128, and its val split, in the store: with
    data.num_canonical_nodes=2 each of two nodes reads half the samples, which are whole shards."""
    root = tmp_path_factory.mktemp("sharded")
    _reshard(sample_mds["mds"] / "train", root / "train", per_shard=128, rows=512)
    _reshard(sample_mds["mds"] / "val", root / "val", per_shard=1 << 20)
    url = f"s3://{s3['bucket']}/sharded"
    for split in ("train", "val"):
        object_store.upload_folder(root / split, f"{url}/{split}", last="index.json")
    return url


# Stand-ins for SLURM's commands, as launch/pretrain.sbatch uses them: srun runs its command once per node with
# that node's SLURM_NODEID/SLURM_PROCID (and ends the others when one fails, as --kill-on-bad-exit); scontrol
# names this host as every node.
FAKE_SRUN = """#!/bin/bash
while [[ $1 == -* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node SLURM_LOCALID=0 "$@" & pids+=($!)
done
for _ in "${pids[@]}"; do
    wait -n || { kill "${pids[@]}" 2>/dev/null; exit 1; }
done
"""
FAKE_SCONTROL = "#!/bin/sh\necho 127.0.0.1\n"
# Composer's launcher of this Python, whether or not its environment has the ``composer`` console script.
COMPOSER = f"#!/bin/sh\nexec {sys.executable} -m composer.cli.launcher \"$@\"\n"


@pytest.fixture(scope="module")
def two_node_run(s3, s3_sharded, sample_mds, tmp_path_factory) -> dict:
    """The same tiny run from the store twice: on one process (in this one), and on two "nodes" of one process
    each, launched by launch/pretrain.sbatch under stand-ins for srun and scontrol (two ``composer -n 1
    --world_size 2 --node_rank 0|1 --master_addr 127.0.0.1`` launchers, gloo), each node with its own data.local
    cache (shared memory is per host: two nodes on one host must not share one) and the checkpoints in the store.
    Both nodes are killed if the run fails or hangs."""
    from m2bert.pretrain import run

    root = tmp_path_factory.mktemp("nodes")
    bindir = root / "bin"
    bindir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("composer", COMPOSER)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    common = ["max_duration=8ba", "eval_interval=8ba", "+model.overrides.hidden_dropout_prob=0.0", "export_hf=true",
              "context_eval_rows=0", f"data.remote={s3_sharded}", "data.num_canonical_nodes=2"]
    saves = f"s3://{s3['bucket']}/runs/two-nodes/checkpoints"
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "node[0-1]", "SLURM_JOB_ID": "22", "GPUS_PER_NODE": "1",
           "MASTER_PORT": str(_free_port())}
    # $NODE_RANK: Composer's launcher expands it in each node's arguments.
    nodes = _cli(tiny_pretrain_overrides(sample_mds, root, "two") + common + [
        f"data.local={root}/cache-node$NODE_RANK", f"save_folder={saves}"],
        launch=[str(ROOT / "launch" / "pretrain.sbatch")], env=env, start_new_session=True)
    try:
        run(compose_pretrain(tiny_pretrain_overrides(sample_mds, root, "one") + common + [f"data.local={root}/cache-one"]))
        out = _finish(nodes, timeout=300)
    finally:
        if nodes.poll() is None:
            os.killpg(nodes.pid, signal.SIGKILL)
            nodes.communicate()
    return {"root": root, "out": out, "saves": saves}


def _shards_read(cache: Path) -> set[str]:
    """The shards a node downloaded into its data.local cache (compressed or decompressed)."""
    return {p.name.split(".mds")[0] for p in (cache / "train").glob("shard.*")}


def test_two_nodes_match_one_and_read_disjoint_shards(two_node_run, s3, s3_sharded):
    """Two nodes (launch/pretrain.sbatch, one composer launcher each) train as one process does, and each node
    downloaded only its own shards: disjoint halves of the store's."""
    root, out = two_node_run["root"], two_node_run["out"]
    assert "2 nodes x 1 processes, rendezvous at 127.0.0.1" in out, out[-3000:]
    _assert_same_training(root / "one", root / "two", 8)
    node0, node1 = _shards_read(root / "cache-node0"), _shards_read(root / "cache-node1")
    stored = {k.rsplit("/", 1)[1].split(".mds")[0] for k in s3_keys(f"{s3['bucket']}/sharded/train/") if ".mds" in k}
    assert len(stored) == 4 and node0 and node1 and node0 | node1 <= stored, (node0, node1, stored)
    assert not node0 & node1, f"both nodes read {node0 & node1}"
    assert "runs/two-nodes/checkpoints/ep0-ba8-rank0.pt" in " ".join(s3_keys(f"{s3['bucket']}/runs/two-nodes/"))


def test_load_path_in_the_store_is_read_once_and_verified(two_node_run, s3, s3_sharded, sample_mds, tmp_path, caplog):
    """load_path=s3://… (the two-node run's checkpoint): downloaded into a private folder, verified with the
    weights-only allowlist, and that copy loaded (the same weights); a checkpoint in the store whose pickle calls
    a type outside the allowlist is refused in one line naming its URL, before anything is built."""
    import pathlib

    from m2bert.pretrain import run

    base = tiny_pretrain_overrides(sample_mds, tmp_path, "loaded") + [
        "max_duration=9ba", "eval_interval=9ba", "context_eval_rows=0", f"data.remote={s3_sharded}",
        f"data.local={tmp_path / 'cache'}"]
    url = f"{two_node_run['saves']}/ep0-ba8-rank0.pt"
    with caplog.at_level("INFO", logger="m2bert.pretrain"):
        summary = run(compose_pretrain(base + [f"load_path={url}"]))
    assert f"loading {url} (verified, re-saved at " in caplog.text
    # The checkpoint's state was loaded: one more batch, after the two-node run's evaluation at batch 8 (which
    # travels in the checkpoint; this run evaluates at batch 9 only).
    trained = json.loads((two_node_run["root"] / "two" / "summary.json").read_text())
    assert summary["batches"] == 9 and summary["eval"][0] == trained["eval"][-1] and trained["eval"][-1]["batch"] == 8
    crafted = tmp_path / "crafted.pt"
    torch.save({"state": {"model": {}}, "rng": pathlib.PurePosixPath("/etc/passwd")}, crafted)
    s3_client().upload_file(str(crafted), s3["bucket"], "runs/crafted/ep0-ba1-rank0.pt")
    bad = f"s3://{s3['bucket']}/runs/crafted/ep0-ba1-rank0.pt"
    with pytest.raises(ConfigError) as e:
        run(compose_pretrain(base + ["run_name=refused", f"load_path={bad}"]))
    assert str(e.value).startswith(f"{bad}: checkpoint refused") and "pathlib" in str(e.value), e.value
    assert "\n" not in str(e.value) and not (tmp_path / "refused" / "hf").exists()


def test_downloaded_shards_are_checked(s3, s3_mds, sample_mds, tmp_path):
    """A shard in the store whose size differs from its index's is refused at start-up; one whose bytes differ
    (same size) fails its hash as it downloads, before the first step: each one line naming the shard."""
    from m2bert.data.shards import ShardError
    from m2bert.pretrain import check_data, run

    bucket, s3c = s3["bucket"], s3_client()
    index = json.loads(s3c.get_object(Bucket=bucket, Key="c4-mds/train/index.json")["Body"].read())
    shard = (index["shards"][0].get("zip_data") or index["shards"][0]["raw_data"])["basename"]
    good = s3c.get_object(Bucket=bucket, Key=f"c4-mds/train/{shard}")["Body"].read()
    for prefix, data in (("truncated", good[:-1]), ("flipped", good[:-1] + bytes([good[-1] ^ 1]))):
        for key in s3_keys(f"{bucket}/c4-mds/train/"):
            if not key.endswith("/" + shard):
                s3c.copy_object(Bucket=bucket, Key=key.replace("c4-mds", prefix), CopySource={"Bucket": bucket, "Key": key})
        s3c.put_object(Bucket=bucket, Key=f"{prefix}/train/{shard}", Body=data)

    def overrides(prefix: str) -> list[str]:
        return _store_overrides(sample_mds, s3_mds, tmp_path, prefix) + [
            f"data.remote=s3://{bucket}/{prefix}", "data.eval_split=null", "max_duration=1ba"]

    with pytest.raises(ShardError, match=f"s3://{bucket}/truncated/train/{shard}: {len(good) - 1} bytes in the store"):
        check_data(compose_pretrain(overrides("truncated")).data)
    with pytest.raises(ShardError) as e:
        run(compose_pretrain(overrides("flipped")))
    assert f"(downloaded from s3://{bucket}/flipped/train/{shard})" in str(e.value), e.value
    assert "Checksum" in str(e.value) and "\n" not in str(e.value), e.value
    assert not (tmp_path / "flipped" / "summary.json").exists()
