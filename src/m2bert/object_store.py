"""Object-store folders (``s3://bucket/prefix``): reachability checked in one line, uploads that publish last, and
read-once downloads into a cache.

The endpoint and credentials are read the way boto3, ``streaming`` and Composer's S3ObjectStore read them
(``S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles), so one environment serves the
data loader, the checkpoint uploader and these checks. Every call here has short timeouts and few retries: a
wrong bucket, refused credentials or a server that is down are one line naming the URL within seconds, before
any heavy work, not a hang or a traceback from a background thread.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from m2bert.options import ConfigError

log = logging.getLogger(__name__)

# Seconds to connect and to read, and attempts per request: a store that is down is reported within ~30 s.
CONNECT_TIMEOUT, READ_TIMEOUT, ATTEMPTS = 5, 30, 2


def is_remote(path: Any) -> bool:
    """``s3://``, ``gs://``, ``oci://``, … (an object store) vs. a local path (``file://`` counts as local)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` → ``("bucket", "a/b")``; ConfigError for another scheme (only S3 is checked here)."""
    scheme, _, rest = url.partition("://")
    if scheme != "s3":
        raise ConfigError(f"{url}: only s3:// object stores are supported (S3-compatible ones through S3_ENDPOINT_URL)")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{url}: no bucket named (use s3://<bucket>/<folder>)")
    return bucket, prefix.strip("/")


def client() -> Any:
    """A boto3 S3 client of the configured endpoint, with short timeouts and retries."""
    import boto3.session
    from botocore.config import Config

    config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                    retries={"max_attempts": ATTEMPTS, "mode": "standard"})
    # A fresh session reads the environment now (boto3's default session keeps the credentials it first found).
    return boto3.session.Session().client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None, config=config)


def _one_line(url: str, key: str, e: BaseException) -> ConfigError:
    """The refusal of an unreachable ``url``, naming what was wrong and where to fix it."""
    from botocore.exceptions import ClientError, NoCredentialsError

    where = os.environ.get("S3_ENDPOINT_URL") or "AWS S3"
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "error")
        message = e.response.get("Error", {}).get("Message", "")
        hint = ("check the bucket name" if code in ("NoSuchBucket", "404") else
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" if code in (
                    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken") else
                "check the URL and the store")
        return ConfigError(f"{key}={url}: the object store at {where} refused it: {code} ({message}); {hint}")
    if isinstance(e, NoCredentialsError):
        return ConfigError(f"{key}={url}: no credentials for the object store; set AWS_ACCESS_KEY_ID and "
                           f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return ConfigError(f"{key}={url}: cannot reach the object store at {where} ({text}); check S3_ENDPOINT_URL "
                       f"and that the store is up")


def list_objects(url: str, key: str = "url") -> dict[str, dict[str, Any]]:
    """Every object under the folder ``url``: relative name → ``{"size", "etag"}``. Also the reachability check:
    a missing bucket, refused credentials or a store that is down raise one ConfigError naming ``key`` and ``url``."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_url(url)
    start = prefix + "/" if prefix else ""
    found: dict[str, dict[str, Any]] = {}
    try:
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(start):]] = {"size": int(obj["Size"]), "etag": obj["ETag"].strip('"')}
    except (BotoCoreError, ClientError) as e:
        raise _one_line(url, key, e) from None
    return found


def join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def upload_folder(local: Path, url: str, key: str = "url", last: str | None = None) -> None:
    """Upload every file of ``local`` under ``url``; ``last`` (e.g. ``index.json``) only after all others are in,
    so a reader that finds it finds everything it lists."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_url(url)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)  # stable: ``last`` goes after every other file
    s3 = client()
    for path in files:
        name = path.relative_to(local).as_posix()
        try:
            s3.upload_file(str(path), bucket, f"{prefix}/{name}" if prefix else name)
        except (BotoCoreError, ClientError) as e:
            raise _one_line(join(url, name), key, e) from None


def delete(url: str, names: list[str], key: str = "url") -> None:
    """Delete the objects ``names`` (relative to the folder ``url``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_url(url)
    s3 = client()
    for name in names:
        try:
            s3.delete_object(Bucket=bucket, Key=f"{prefix}/{name}" if prefix else name)
        except (BotoCoreError, ClientError) as e:
            raise _one_line(join(url, name), key, e) from None


def cache_root() -> Path:
    """Where downloaded folders are kept: ``$M2BERT_CACHE`` or ``~/.cache/m2bert``, under ``remote/``."""
    return Path(os.environ.get("M2BERT_CACHE") or Path.home() / ".cache" / "m2bert") / "remote"


def cached_folder(url: str, key: str = "url") -> Path:
    """A local copy of the folder ``url``, downloaded once: reused while the store lists the same objects (names,
    sizes, ETags), else downloaded afresh into a private folder, each file's size checked, and renamed into place
    (a half-done download is never reused). The caller still reads the files with its own safe loaders."""
    listing = list_objects(url, key)
    if not listing:
        raise ConfigError(f"{key}={url}: the object store holds nothing there")
    target = cache_root() / hashlib.sha256(url.encode()).hexdigest()[:24]
    manifest = target / ".m2bert-remote.json"
    try:
        if json.loads(manifest.read_text()) == {"url": url, "objects": listing}:
            log.info("%s: using the cached copy %s", url, target)
            return target
    except (OSError, ValueError):
        pass
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_url(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        s3 = client()
        for name, info in listing.items():
            dest = private / name
            if private.resolve() not in (dest.resolve(), *dest.resolve().parents) or name.endswith("/"):
                raise ConfigError(f"{key}={url}: object {name!r} would land outside the download folder")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                s3.download_file(bucket, f"{prefix}/{name}" if prefix else name, str(dest))
            except (BotoCoreError, ClientError) as e:
                raise _one_line(join(url, name), key, e) from None
            if dest.stat().st_size != info["size"]:
                raise ConfigError(f"{join(url, name)}: downloaded {dest.stat().st_size} bytes, the store lists "
                                  f"{info['size']}; try again")
        (private / manifest.name).write_text(json.dumps({"url": url, "objects": listing}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(private, target)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    log.info("%s: downloaded %d files to %s", url, len(listing), target)
    return target
