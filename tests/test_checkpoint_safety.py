"""A checkpoint whose pickle carries a payload is refused, with one line, on every route that reads one
(GLUE composer start in both pickle formats, load_path, autoresume), before anything unpickles it;
our own checkpoints still load. A checkpoint is read once: a tar/zip polyglot, a file swapped after the
check, tensors or numpy dtypes that lie about their memory and checkpoints of another size are refused
or never reach Composer (issue 21)."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from tests.conftest import compose_pretrain, tiny_pretrain_overrides

from m2bert.options import ConfigError
from m2bert.train.checkpoint_safety import load_checkpoint_safely
from m2bert.train.schema import register

register()


def _overrides(sample_mds, run_root: Path, run_name: str) -> list[str]:
    return tiny_pretrain_overrides(sample_mds, run_root, run_name, settings={"global_train_batch_size": 8, "impl.device_train_microbatch_size": 8, "eval_subset_num_batches": 1,
                     "max_duration": "2ba", "eval_interval": "2ba", "save_interval": "2ba"})



@pytest.fixture(scope="module")
def ours(sample_mds, tmp_path_factory) -> dict[str, Path]:
    """One tiny pretraining run: a genuine checkpoint of ours and the HF export beside it."""
    from m2bert.pretrain import run

    root = tmp_path_factory.mktemp("ckpt")
    summary = run(compose_pretrain(_overrides(sample_mds, root, "genuine")))
    return {"root": root, "ckpt": Path(summary["checkpoints"]) / "ep0-ba2-rank0.pt", "hf": Path(summary["hf_export"])}


class _Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil(ours: dict[str, Path], path: Path, marker: Path, legacy: bool = False) -> Path:
    """Our genuine checkpoint with a payload added: it looks right and would load without the check."""
    ckpt = load_checkpoint_safely(ours["ckpt"])
    ckpt["state"]["metadata"]["note"] = _Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


def _one_line_refusal(err: pytest.ExceptionInfo, path: Path | str, key: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "exec" in msg and f"{key}=true" in msg, msg


def test_our_checkpoint_passes_and_holds_only_allowed_types(ours):
    ckpt = load_checkpoint_safely(ours["ckpt"])
    assert int(ckpt["state"]["timestamp"]["Timestamp"]["batch"]) == 2
    assert any(k.startswith("model.bert.") for k in ckpt["state"]["model"])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ours["ckpt"]))  # numpy etc.: hence the allowlist


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_glue_composer_start_refuses_payload(ours, tmp_path, legacy):
    from m2bert.glue.start import resolve_start

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "run" / "checkpoints" / "ep0-ba2-rank0.pt", marker, legacy)
    with pytest.raises(ConfigError) as err:
        resolve_start("composer", str(evil), config=str(ours["hf"]))
    assert not marker.exists()
    _one_line_refusal(err, evil, "start.trust_checkpoint")
    # the genuine checkpoint still starts a GLUE job, loaded weights-only
    start = resolve_start("composer", str(ours["ckpt"]), config=str(ours["hf"]))
    assert any(k.startswith("bert.") for k in start.state)


def test_glue_driver_refuses_payload_before_any_job(ours, sample_mds, tmp_path):
    from m2bert.glue.driver import run
    from tests.conftest import compose_glue

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "evil.pt", marker)
    cfg = compose_glue(["glue=m2_bert_tiny", "start.kind=composer", f"start.path={evil}", f"start.config={ours['hf']}",
                        f"data.source={sample_mds['raw'] / 'glue'}", "tasks=[sample-ss]", "max_duration=1ba",
                        "device=cpu", f"run_root={tmp_path}", "run_name=g"])
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert not marker.exists()
    _one_line_refusal(err, evil, "start.trust_checkpoint")


def test_load_path_refuses_payload(ours, sample_mds, tmp_path):
    from m2bert.pretrain import run

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "evil.pt", marker)
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "lp") + [f"load_path={evil}"]))
    assert not marker.exists()
    _one_line_refusal(err, evil, "trust_checkpoint")


def test_autoresume_refuses_payload_placed_as_latest(ours, sample_mds, tmp_path):
    from m2bert.pretrain import run

    marker = tmp_path / "marker"
    latest = _evil(ours, tmp_path / "ar" / "checkpoints" / "latest-rank0.pt", marker)
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "ar") + ["autoresume=true"]))
    assert not marker.exists()
    _one_line_refusal(err, latest, "trust_checkpoint")
    # the same through a latest link to a payload named like one of our checkpoints
    os.unlink(latest)
    named = _evil(ours, latest.with_name("ep0-ba4-rank0.pt"), marker)
    os.symlink(named.name, latest)
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "ar") + ["autoresume=true"]))
    assert not marker.exists()
    _one_line_refusal(err, named, "trust_checkpoint")


def test_genuine_checkpoint_resumes(ours, sample_mds, tmp_path):
    """Our own checkpoint passes the check on the autoresume route and training continues from it."""
    from m2bert.pretrain import run

    folder = tmp_path / "cont" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(ours["ckpt"], folder / ours["ckpt"].name)
    os.symlink(ours["ckpt"].name, folder / "latest-rank0.pt")
    summary = run(compose_pretrain(_overrides(sample_mds, tmp_path, "cont") + ["autoresume=true", "max_duration=3ba",
                                                                       "export_hf=false"]))
    assert summary["batches"] == 3


def test_trust_checkpoint_skips_the_check_with_a_warning(ours, tmp_path, caplog):
    from m2bert.train.checkpoint_safety import warn_trusted

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "evil.pt", marker)
    with caplog.at_level("WARNING"):
        warn_trusted(evil)
    assert "without checks" in caplog.text and not marker.exists()  # skipped, not loaded


def test_checkpoint_of_the_earlier_wrapper_loads(ours, sample_mds, tmp_path):
    """Checkpoints written before the wrapper had one child also hold encoder.* / head.* copies of
    model.bert.* / model.mlm_head.*: load_path still loads them (strictly) and training continues."""
    from m2bert.pretrain import run

    ckpt = load_checkpoint_safely(ours["ckpt"])
    model_state = ckpt["state"]["model"]
    assert all(k.startswith("model.") for k in model_state)  # ours: the model's keys only
    for key, value in list(model_state.items()):
        for prefix, alias in (("model.bert.", "encoder."), ("model.mlm_head.", "head.")):
            if key.startswith(prefix):
                model_state[alias + key[len(prefix):]] = value.clone()
    legacy = tmp_path / "legacy.pt"
    torch.save(ckpt, legacy)
    summary = run(compose_pretrain(_overrides(sample_mds, tmp_path, "legacy") + [f"load_path={legacy}", "max_duration=3ba",
                                                                         "export_hf=false"]))
    assert summary["batches"] == 3


# ----------------------------------------------------------------------------- read once (issue 21)


def _lfh(name: bytes, data: bytes, extra: bytes = b"") -> bytes:
    """A zip local file header (stored, no compression) for ``data``."""
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                       len(name), len(extra)) + name + extra


def _polyglot(ckpt: dict, members: list[tuple[str, bytes]]) -> bytes:
    """A valid torch zip checkpoint of ``ckpt`` that is also a tar archive of ``members``.

    The zip's first local header is padded (its extra field) to 512 bytes that also form a tar header with a valid
    checksum; that tar member spans the zip's records, the tar's own members follow, then the zip's central
    directory, which zip readers find from the end of the file."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    with zipfile.ZipFile(buf) as z:
        entries = [(i.filename.encode(), z.read(i)) for i in z.infolist()]
    (name0, data0), offsets, body = entries[0], [0], bytearray(entries[0][1])
    for name, data in entries[1:]:
        offsets.append(512 + len(body))
        body += _lfh(name, data) + data
    body += bytes(-len(body) % 512)
    fixed = 30 + len(name0)
    info = tarfile.TarInfo("x")
    info.size = len(body)
    header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    header[:100] = bytes(100)
    header[:fixed] = _lfh(name0, data0, bytes(512 - fixed))[:fixed]
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    out = bytearray(header) + body
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += info.tobuf(format=tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)
    out += bytes(1024)
    directory = len(out)
    for (name, data), offset in zip(entries, offsets):
        out += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                           len(name), 0, 0, 0, 0, 0, offset) + name
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(out) - directory, directory, 0)
    return bytes(out)


@pytest.mark.parametrize("name", ["evil.tar", "evil.pt"])
def test_tar_zip_polyglot_load_path_is_refused(ours, sample_mds, tmp_path, name):
    """Our check read the zip; Composer, seeing .tar, extracted it (a ../ member escaped the folder) and unpickled
    its composer_states.pt. Now a tar is refused in one line before anything reads it further."""
    from m2bert.pretrain import run

    marker, escaped = tmp_path / "marker", tmp_path / "escaped"
    evil = tmp_path / name
    evil.write_bytes(_polyglot(load_checkpoint_safely(ours["ckpt"]),
                               [("composer_states.pt", pickle.dumps(_Payload(marker))),
                                ("../" * 40 + str(escaped).lstrip("/"), b"outside")]))
    assert tarfile.is_tarfile(evil) and zipfile.is_zipfile(evil)  # both, as built
    with pytest.raises(ConfigError) as err:
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "poly") + [f"load_path={evil}", "export_hf=false"]))
    assert not marker.exists() and not escaped.exists()
    msg = str(err.value)
    assert "\n" not in msg and str(evil) in msg and "tar archive" in msg and "trust_checkpoint=true" in msg, msg


@pytest.mark.parametrize("route", ["load_path", "autoresume"])
def test_file_swapped_after_the_check_never_reaches_composer(ours, sample_mds, tmp_path, monkeypatch, route):
    """The check and Composer's load used to open the file separately: a payload swapped in between ran. Now the
    checkpoint is read once and Composer loads our private re-save of what was verified."""
    from m2bert.pretrain import run
    from m2bert.train import checkpoint_safety

    marker = tmp_path / "marker"
    evil = _evil(ours, tmp_path / "evil.pt", marker)
    folder = tmp_path / ("swap/checkpoints" if route == "autoresume" else "elsewhere")  # the run's own, or not
    folder.mkdir(parents=True)
    genuine = folder / ours["ckpt"].name
    shutil.copy(ours["ckpt"], genuine)
    if route == "autoresume":
        os.symlink(genuine.name, folder / "latest-rank0.pt")
    read = checkpoint_safety.load_checkpoint_safely

    def read_then_swap(path, *args, **kwargs):
        ckpt = read(path, *args, **kwargs)
        if Path(path) == genuine:
            os.replace(evil, genuine)  # the attacker wins the race: the path now holds the payload
        return ckpt

    monkeypatch.setattr(checkpoint_safety, "load_checkpoint_safely", read_then_swap)
    extra = ["autoresume=true"] if route == "autoresume" else [f"load_path={genuine}"]
    summary = run(compose_pretrain(_overrides(sample_mds, tmp_path, "swap") + extra + ["max_duration=3ba",
                                                                                      "export_hf=false"]))
    assert not evil.exists(), "the swap did not happen"
    assert not marker.exists()
    if route == "autoresume":
        assert summary["batches"] == 3  # resumed from the verified batch-2 state


def test_tensor_and_numpy_metadata_must_fit_their_memory(tmp_path):
    """The weights-only loader rebuilt a (1e6, 1e6) stride-0 view of one element and a numpy dtype whose field lies
    1e8 bytes past its 4-byte item; both load fine and misbehave later (terabytes at the first copy, reads
    outside the buffer)."""
    import numpy as np

    class BadDtype:
        def __reduce__(self):
            rebuild, args, state = np.dtype([("a", "<i4")]).__reduce__()
            return rebuild, args, (*state[:4], {"a": (np.dtype("<i4"), 10 ** 8)}, *state[5:])

    expanded = tmp_path / "expanded.pt"
    torch.save({"state": {"model": {"w": torch.zeros(1).as_strided((10 ** 6, 10 ** 6), (0, 0))}}}, expanded)
    with pytest.raises(ConfigError, match=r"state/model/w is a tensor of shape \(1000000, 1000000\) .* does not fit "
                                          r"its storage of 1 elements"):
        load_checkpoint_safely(expanded)
    dtype = tmp_path / "dtype.pt"
    torch.save({"rng": [BadDtype()]}, dtype)
    with pytest.raises(ConfigError, match=r"rng/0 is a numpy dtype whose field 'a' \(offset 100000000, 4 bytes\) lies "
                                          r"outside its 4-byte item"):
        load_checkpoint_safely(dtype)


def test_refused_opcode_is_named(tmp_path):
    """torch reports an unsupported opcode by its byte value ("calls 149"); the message names it."""
    path = tmp_path / "p4.pt"
    torch.save({"state": {}}, path, pickle_protocol=4)
    with pytest.raises(ConfigError) as err:
        load_checkpoint_safely(path)
    assert "opcode FRAME" in str(err.value) and "149" not in str(err.value), str(err.value)


def test_checkpoint_of_another_size_is_one_line_naming_the_key(ours, sample_mds, tmp_path):
    """load_state_dict listed every mismatch over many lines (GLUE) or Composer raised them mid-start (pretraining)."""
    from m2bert.glue.start import load_classifier, resolve_start
    from m2bert.pretrain import run

    ckpt = load_checkpoint_safely(ours["ckpt"])
    key = "model.bert.embeddings.word_embeddings.weight"
    rows, width = ckpt["state"]["model"][key].shape
    ckpt["state"]["model"][key] = ckpt["state"]["model"][key][: rows - 8].clone()
    other = tmp_path / "run" / "checkpoints" / "other.pt"
    other.parent.mkdir(parents=True)
    torch.save(ckpt, other)
    want = rf"{key[len('model.'):]} has shape \({rows - 8}, {width}\) in the checkpoint but \({rows}, {width}\) in the model"
    with pytest.raises(ConfigError, match=want):
        load_classifier(resolve_start("composer", str(other), config=str(ours["hf"])), num_labels=2, pooling="cls")
    with pytest.raises(ConfigError, match=rf"{other}: model\.{want}"):
        run(compose_pretrain(_overrides(sample_mds, tmp_path, "size") + [f"load_path={other}", "export_hf=false"]))


def test_remote_load_path_is_downloaded_privately_then_verified(ours, tmp_path):
    """A URL is fetched with Composer's get_file into the private folder and checked like a local file; refusals
    name the URL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from m2bert.train.checkpoint_safety import verified_checkpoint

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(ours["ckpt"], served / "good.pt")
    _evil(ours, served / "evil.pt", tmp_path / "marker")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with verified_checkpoint(f"{base}/good.pt") as verified:
            private = Path(verified.path).parent
            assert oct(private.stat().st_mode & 0o777) == "0o700" and os.listdir(private) == ["verified.pt"]
            assert load_checkpoint_safely(verified.path)["state"]["model"].keys() == \
                load_checkpoint_safely(ours["ckpt"])["state"]["model"].keys()
        assert not private.exists()
        with pytest.raises(ConfigError) as err:
            with verified_checkpoint(f"{base}/evil.pt"):
                pass
        _one_line_refusal(err, f"{base}/evil.pt", "trust_checkpoint")
        assert not (tmp_path / "marker").exists()
    finally:
        server.shutdown()
