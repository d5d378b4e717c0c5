"""Locations: local paths and fsspec URLs (`s3://bucket/prefix`, `gs://...`, `memory://...`).

Every input and output location of slamgeo may be a local path or a URL that fsspec knows
(object storage needs its fsspec package, for S3 `s3fs`; credentials and endpoint come from
the usual places: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`,
`~/.aws/...`). The functions here take either and go through `fsspec.core.url_to_fs`, so
callers need one code path. A local location comes back as a `Path`, a URL as a `str`.

What "complete" means, per kind of output:
- a file is written whole or not at all: locally to a temporary sibling renamed into place,
  on object storage as one PUT (readers see the old object or the new one, never half);
- a folder (model checkpoint, parcels outputs, the synthetic scene) is written into a local
  staging folder and published: locally by renaming it into place (atomic); on object storage,
  which has no rename, by removing the folder's *marker* file first, uploading the other files,
  and uploading the marker last, so the marker's presence means the folder is complete;
- a Zarr store carries the root attribute `slamgeo_complete`, set last (see `slamgeo.cube`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

Location = str | Path


def is_url(loc: Location) -> bool:
    """True for a URL with a scheme (`s3://...`, `file://...`), False for a plain path."""
    return "://" in str(loc)


def location(loc: Location) -> Location:
    """`loc` normalised: a plain path as a `Path`, a URL as a `str` without a trailing slash."""
    return str(loc).rstrip("/") if is_url(loc) else Path(loc)


def join(loc: Location, *parts: str) -> Location:
    """`loc / part / ...`: a `Path` for a local location, a `str` URL otherwise."""
    if not is_url(loc):
        return Path(loc).joinpath(*parts)
    return "/".join([str(loc).rstrip("/"), *(p.strip("/") for p in parts)])


def name(loc: Location) -> str:
    """The last component of a path or URL."""
    return str(loc).rstrip("/").rsplit("/", 1)[-1]


def parent(loc: Location) -> Location:
    """The folder holding `loc`."""
    if not is_url(loc):
        return Path(loc).parent
    return str(loc).rstrip("/").rsplit("/", 1)[0]


def filesystem(loc: Location) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `loc` and the path within it."""
    return fsspec.core.url_to_fs(str(loc))


def is_local(loc: Location) -> bool:
    """True when `loc` lives on the local filesystem (a plain path or a `file://` URL)."""
    return isinstance(filesystem(loc)[0], LocalFileSystem)


def exists(loc: Location) -> bool:
    """True if a file, a folder or (on object storage) any object under the prefix exists."""
    fs, path = filesystem(loc)
    return fs.exists(path)


def isdir(loc: Location) -> bool:
    fs, path = filesystem(loc)
    return fs.isdir(path)


def isfile(loc: Location) -> bool:
    fs, path = filesystem(loc)
    return fs.isfile(path)


def is_empty_dir(loc: Location) -> bool:
    """True for a folder (or prefix) holding nothing; False when absent or not empty."""
    fs, path = filesystem(loc)
    try:
        return fs.isdir(path) and not fs.ls(path, detail=False)
    except FileNotFoundError:
        return False


def read_bytes(loc: Location) -> bytes:
    """The content of a file; `FileNotFoundError` when there is none."""
    fs, path = filesystem(loc)
    return fs.cat_file(path)


def read_text(loc: Location, encoding: str = "utf-8") -> str:
    return read_bytes(loc).decode(encoding)


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole file, atomically (see the module doc); local parent folders are created."""
    fs, path = filesystem(loc)
    if isinstance(fs, LocalFileSystem):
        # fsspec's local `pipe_file` writes in place; a rename is what makes it atomic here.
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        fs.pipe_file(path, data)


def write_text(loc: Location, text: str, encoding: str = "utf-8") -> None:
    write_bytes(loc, text.encode(encoding))


def makedirs(loc: Location) -> None:
    """Create a local folder (with parents); nothing to do on object storage, which has none."""
    fs, path = filesystem(loc)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(path, exist_ok=True)


def remove(loc: Location) -> None:
    """Remove a file or a whole folder / prefix; nothing happens when there is none."""
    fs, path = filesystem(loc)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def glob(loc: Location, pattern: str) -> list[Location]:
    """Entries of the folder `loc` matching `pattern` (for example `*.png`), sorted, as
    locations of the same kind as `loc`."""
    fs, path = filesystem(loc)
    found = sorted(fs.glob(f"{path.rstrip('/')}/{pattern}"))
    if not is_url(loc):
        return [Path(p) for p in found]
    return [join(loc, p.rsplit("/", 1)[-1]) for p in found]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def upload_folder(src: Path, dest: Location, *, marker: str | None = None) -> None:
    """Copy the local folder `src` to `dest` (a URL), file by file, `marker` (a path relative
    to `src`) last. Existing files at `dest` are overwritten, others are left."""
    fs, root = filesystem(dest)
    files = _files(src)
    rel = [f.relative_to(src).as_posix() for f in files]
    order = [i for i, r in enumerate(rel) if r != marker] + [i for i, r in enumerate(rel) if r == marker]
    first = [i for i in order if rel[i] != marker]
    if first:
        # lists of equal length: fsspec copies pairwise, without its folder-name rules
        fs.put([str(files[i]) for i in first], [f"{root.rstrip('/')}/{rel[i]}" for i in first])
    for i in order[len(first):]:
        fs.put_file(str(files[i]), f"{root.rstrip('/')}/{rel[i]}")


def publish_folder(src: Path, dest: Location, *, marker: str | None = None) -> None:
    """Put the finished local folder `src` at `dest`, replacing what is there.

    Local `dest` (`src` must be on the same filesystem, see `staged_folder`): `src` is renamed
    into place, the old folder moved aside first and removed only then. Object storage: the old
    `marker` goes first, then the old folder, then the new files with `marker` last; `src` is
    left for the caller to remove.
    """
    if not is_url(dest) or is_local(dest):
        out = Path(filesystem(dest)[1])
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
            os.replace(out, old)
        try:
            os.replace(src, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    if marker is not None:
        remove(join(dest, marker))
    remove(dest)
    upload_folder(src, dest, marker=marker)


@contextlib.contextmanager
def staged_folder(dest: Location, *, marker: str | None = None) -> Iterator[Path]:
    """A new, empty local folder to write a whole output folder into; when the block ends
    without error it is published to `dest` (`publish_folder`), and removed in any case.

    The folder is a hidden sibling of a local `dest` (so that the final rename is atomic) or a
    temporary folder for a URL."""
    if not is_url(dest) or is_local(dest):
        out = Path(filesystem(dest)[1])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{secrets.token_hex(4)}")
        tmp.mkdir()  # not mkdtemp: the published folder keeps the umask's permissions, not 0700
    else:
        tmp = Path(tempfile.mkdtemp(prefix="slamgeo-stage-"))
    try:
        yield tmp
        publish_folder(tmp, dest, marker=marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def open_input(loc: Location, mode: str = "rb"):
    """An open file for reading a local path or a URL (libraries that take file objects)."""
    with fsspec.open(str(loc), mode) as f:
        yield f


def gdal_s3_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """GDAL configuration options that point `/vsis3/` (what rasterio makes of `s3://`) at
    the S3-compatible endpoint named by `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, which
    boto and s3fs read but GDAL does not: `AWS_S3_ENDPOINT` (host[:port]), `AWS_HTTPS` from
    the scheme, and path-style addressing (`AWS_VIRTUAL_HOSTING=FALSE`, what MinIO, Ceph and
    moto expect). Empty when no endpoint is set or GDAL's own `AWS_S3_ENDPOINT` is."""
    env = os.environ if environ is None else environ
    url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not url or env.get("AWS_S3_ENDPOINT"):
        return {}
    parsed = urlsplit(url)
    if not parsed.netloc:
        return {}
    return {
        "AWS_S3_ENDPOINT": parsed.netloc + parsed.path.rstrip("/"),
        "AWS_HTTPS": "YES" if parsed.scheme == "https" else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


@contextlib.contextmanager
def gdal_s3_environ() -> Iterator[None]:
    """`gdal_s3_options` as environment variables while the block runs, restored after.

    Environment variables rather than `rasterio.Env`: rasterio's options are thread-local, and
    the reads happen in Dask's threads, where GDAL falls back to the environment. Only
    variables that are not set are added, so the user's own settings always win.
    """
    added = {k: v for k, v in gdal_s3_options().items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k, v in added.items():
            if os.environ.get(k) == v:
                del os.environ[k]


__all__ = [
    "Location",
    "exists",
    "gdal_s3_environ",
    "gdal_s3_options",
    "filesystem",
    "glob",
    "is_empty_dir",
    "is_local",
    "is_url",
    "isdir",
    "isfile",
    "join",
    "location",
    "makedirs",
    "name",
    "open_input",
    "parent",
    "publish_folder",
    "read_bytes",
    "read_text",
    "remove",
    "staged_folder",
    "upload_folder",
    "write_bytes",
    "write_text",
]
