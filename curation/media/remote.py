"""Media and lake files on an object store (``s3://``, ``gs://``...), read through pyarrow's filesystems.

Credentials and the endpoint come from the standard environment, as for Lance: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` (an S3-compatible store)
and ``AWS_ALLOW_HTTP`` (a plain-http endpoint). Media are decoded from a temporary local copy
(``local_copy``): FFmpeg and OpenCV then read a real file, and the copy is removed when the caller is done.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pyarrow.fs as pafs

COPY_CHUNK = 8 << 20


def is_remote(uri: str) -> bool:
    """A URI with a scheme other than ``file://`` (``s3://bucket/key``, ``gs://...``)."""
    return "://" in uri and not uri.startswith("file://")


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the environment (endpoint, region, plain http)."""
    kwargs: dict[str, object] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes") and "scheme" not in kwargs:
        kwargs["scheme"] = "http"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``uri`` and the path within it (``bucket/key`` for object stores)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if not is_remote(uri):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    return pafs.FileSystem.from_uri(uri)


def _scheme_prefix(uri: str) -> str:
    return uri.split("://", 1)[0] + "://"


def list_files(uri: str, extensions: Iterable[str], recursive: bool = True) -> list[str]:
    """URIs of the objects under the prefix ``uri`` whose extension is in ``extensions`` (``uri`` itself when it
    names one object); ``FileNotFoundError`` when nothing is there."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [uri]
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input path does not exist: {uri}")
    wanted = {e.lower() for e in extensions}
    found = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    prefix = _scheme_prefix(uri)
    return sorted(prefix + f.path for f in found
                  if f.type == pafs.FileType.File and os.path.splitext(f.path)[1].lower() in wanted)


def list_dirs(uri: str) -> list[str]:
    """Names of the folders (common prefixes) directly under ``uri``; empty when there is none."""
    fs, path = filesystem(uri)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(f.base_name for f in found if f.type == pafs.FileType.Directory)


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path with the bytes of ``uri``: the path itself when it is local, else a temporary copy (same
    extension, so format sniffing by name still works) removed on exit. A missing object raises
    ``FileNotFoundError`` (an ``OSError``, like a missing local file)."""
    if not is_remote(uri):
        yield uri[len("file://"):] if uri.startswith("file://") else uri
        return
    fs, path = filesystem(uri)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="wan-media-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
            shutil.copyfileobj(src, out, COPY_CHUNK)
        yield tmp
    finally:
        os.unlink(tmp)
