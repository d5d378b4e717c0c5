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
- a Zarr store carries the root attribute `slamgeo_complete`, set last (see `slamgeo.io.cube`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from slamgeo.errors import OutputError
from slamgeo.schema import COMPLETE_ATTR as _COMPLETE_ATTR
from slamgeo.schema import KIND_ATTR, MODEL_MARKER, PARCELS_MARKER, REPORT_MARKER, SCENE_MARKER, WEIGHTS_FILE

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
        try:
            fs.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{loc}: cannot create this folder ({exc.strerror or exc})") from exc


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
    for i in order[len(first) :]:
        fs.put_file(str(files[i]), f"{root.rstrip('/')}/{rel[i]}")


def publish_folder(src: Path, dest: Location, kind: OutputKind) -> None:
    """Put the finished local folder `src` at `dest`, replacing what is there (checked by the
    caller with `claim_output`).

    Local `dest` (`src` must be on the same filesystem, see `staged_folder`): `src` is renamed
    into place, the old folder moved aside first and removed only then. Object storage: an
    `INCOMPLETE` file naming the kind goes up first (so an interrupted upload is still
    provably slamgeo's), then the old marker and the old folder go, then the new files with
    the kind's marker last, and `INCOMPLETE` is removed; `src` is left for the caller to remove.
    """
    if not is_url(dest) or is_local(dest):
        out = Path(filesystem(dest)[1])
        old = None
        if out.exists():
            old = out.with_name(temporary_name(out, "old", hidden=True))
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
    with writing_in_place(dest, kind):
        fs, root = filesystem(dest)
        stale = [f for f in fs.find(root) if f.rstrip("/").rsplit("/", 1)[-1] != INCOMPLETE]
        if stale:
            fs.rm(stale)
        upload_folder(src, dest, marker=kind.marker)


@contextlib.contextmanager
def writing_in_place(dest: Location, kind: OutputKind) -> Iterator[None]:
    """For a folder output written file by file where it lives (object storage, or a report):
    an `INCOMPLETE` file naming `kind` is there first and removed last, and the kind's marker is
    removed first, so the folder is complete only once the marker is back, and an interrupted
    write is still recognised as slamgeo's own (`claim_output`)."""
    write_text(join(dest, INCOMPLETE), kind.name)
    if kind.marker is not None:
        remove(join(dest, kind.marker))
    yield
    remove(join(dest, INCOMPLETE))


@contextlib.contextmanager
def staged_folder(dest: Location, kind: OutputKind) -> Iterator[Path]:
    """A new, empty local folder to write a whole output folder of `kind` into; when the block
    ends without error it is published to `dest` (`publish_folder`), and removed in any case.

    The folder is a hidden sibling of a local `dest` (so that the final rename is atomic; one
    left by a killed run is removed here, `remove_stale_temporaries`) or a temporary folder for
    a URL."""
    if not is_url(dest) or is_local(dest):
        out = Path(filesystem(dest)[1])
        remove_stale_temporaries(out, kind)
        makedirs(out.parent)
        tmp = out.with_name(temporary_name(out, "tmp", hidden=True))
        tmp.mkdir()  # not mkdtemp: the published folder keeps the umask's permissions, not 0700
    else:
        tmp = Path(tempfile.mkdtemp(prefix="slamgeo-stage-"))
    try:
        yield tmp
        publish_folder(tmp, dest, kind)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- output ownership
#
# One rule for every writer: an existing output location is replaced only when it is provably
# slamgeo's own output of the same kind, never when it holds an input of the command or any
# file the writer does not write. `claim_output` applies it; writers call it before any work.

INCOMPLETE = ".slamgeo-incomplete"  # in a folder output being written in place: holds its kind
_ZARR_META = frozenset({".zattrs", ".zgroup", ".zmetadata", "zarr.json"})


@dataclass(frozen=True)
class OutputKind:
    """What one writer writes. A Zarr kind is recognised by the root attribute `slamgeo_kind`
    (stores written before it existed: by `slamgeo_complete` and their variables); a folder kind
    by its `marker` file, and every entry of the folder must match one of `entries` (glob
    patterns of the names the writer writes at the top level)."""

    name: str
    zarr: bool = False
    marker: str | None = None
    entries: tuple[str, ...] = ()


CUBE = OutputKind("cube", zarr=True)
RESULTS = OutputKind("results", zarr=True)
CHECKPOINT = OutputKind("checkpoint", marker=MODEL_MARKER, entries=(MODEL_MARKER, WEIGHTS_FILE))
PARCELS = OutputKind(
    "parcels",
    marker=PARCELS_MARKER,
    entries=(PARCELS_MARKER, "parcels.zarr", "class_profiles.zarr", "parcels.parquet", "confusion_*.csv"),
)
REPORT = OutputKind("report", marker=REPORT_MARKER, entries=(REPORT_MARKER, "report.json", "*.png"))
SCENE = OutputKind(
    "scene",
    marker=SCENE_MARKER,
    entries=(SCENE_MARKER, "tiffs", "stac.json", "archive", "parcels*.gpkg", "phenology.csv", "truth.tif"),
)


def _entries(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, str]:
    """Top-level names under `path` -> "file" or "directory"."""
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: e["type"] for e in fs.ls(path, detail=True)}


def _zarr_attrs(fs: fsspec.AbstractFileSystem, path: str) -> dict | None:
    """The root attributes of a Zarr group at `path` (format 2 or 3), None when it is not one."""
    import json

    for meta, key in ((".zattrs", None), ("zarr.json", "attributes")):
        try:
            doc = json.loads(fs.cat_file(f"{path}/{meta}"))
        except (FileNotFoundError, ValueError, OSError):
            continue
        if isinstance(doc, dict):
            return dict(doc.get(key, {}) if key else doc)
    return None


def store_kind(loc: Location) -> str | None:
    """ "cube" or "results" for a Zarr store slamgeo wrote at `loc`, else None."""
    fs, path = filesystem(loc)
    attrs = _zarr_attrs(fs, path.rstrip("/"))
    if attrs is None:
        return None
    if KIND_ATTR in attrs:
        return str(attrs[KIND_ATTR])
    if _COMPLETE_ATTR in attrs:  # written before stores carried their kind
        return "results" if "model_checksum" in attrs else "cube"
    return None


def _contains(outer: Location, inner: Location) -> bool:
    """True when `inner` is `outer` or lies below it (same filesystem)."""
    if is_url(outer) != is_url(inner):
        return False
    if is_url(outer):
        a, b = str(outer).rstrip("/"), str(inner).rstrip("/")
    else:
        a, b = str(Path(outer).resolve()), str(Path(inner).resolve())
    return b == a or b.startswith(a.rstrip("/") + "/")


def _foreign(kind: OutputKind, fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Top-level entries under `path` that a writer of `kind` does not write."""
    import fnmatch

    entries = _entries(fs, path)
    if kind.zarr:
        # metadata files, and arrays / groups (folders that hold Zarr metadata)
        return sorted(
            n
            for n, t in entries.items()
            if n not in _ZARR_META
            and not (
                t == "directory" and any(fs.exists(f"{path}/{n}/{m}") for m in (".zarray", ".zgroup", "zarr.json"))
            )
        )
    return sorted(n for n in entries if n != INCOMPLETE and not any(fnmatch.fnmatchcase(n, p) for p in kind.entries))


def _incomplete_of(kind: OutputKind, fs: fsspec.AbstractFileSystem, path: str, entries: Mapping[str, str]) -> bool:
    """True when the folder holds the `INCOMPLETE` file of an interrupted write of `kind`."""
    if INCOMPLETE not in entries:
        return False
    try:
        return fs.cat_file(f"{path}/{INCOMPLETE}").decode().strip() == kind.name
    except (OSError, UnicodeDecodeError):
        return False


def claim_output(
    out: Location,
    kind: OutputKind,
    *,
    overwrite: bool = False,
    inputs: Sequence[Location] = (),
    resume: bool = False,
) -> str:
    """Check that a writer of `kind` may write at `out`; returns what is there: "absent",
    "empty" (an empty folder), or "own" (an output of this kind, replaceable).

    Raises `OutputError`, naming what was found, when `out` is or contains (or lies inside) one
    of `inputs`; when it is a file; when it is a folder that is not an output of `kind` or that
    holds anything such a writer does not write; and, unless `overwrite` (or `resume`: the
    caller continues an incomplete output of its own), when it is an output of `kind` already.
    """
    out = location(out)
    for inp in inputs:
        if _contains(out, inp) or _contains(inp, out):
            what = (
                "is"
                if _contains(inp, out) and _contains(out, inp)
                else ("holds" if _contains(out, inp) else "lies inside")
            )
            raise OutputError(f"{out}: the output {what} the input {inp}; choose another output location")
    fs, path = filesystem(out)
    path = path.rstrip("/")
    try:
        if fs.isfile(path):
            raise OutputError(
                f"{out}: is a file, not a {kind.name} {'store' if kind.zarr else 'folder'}; "
                "choose another output location"
            )
        if not fs.exists(path):
            return "absent"
        entries = _entries(fs, path)
    except FileNotFoundError:
        return "absent"
    if not entries:
        return "empty"
    found = store_kind(out) if kind.zarr or ".zattrs" in entries or "zarr.json" in entries else None
    if kind.zarr:
        if found != kind.name:
            what = f"a slamgeo {found} store" if found else _describe(entries)
            raise OutputError(f"{out}: holds {what}, not a slamgeo {kind.name} store; refusing to replace it")
    else:
        if found is not None:
            raise OutputError(f"{out}: holds a slamgeo {found} store, not a {kind.name} folder; refusing to replace it")
        if kind.marker not in entries and not _incomplete_of(kind, fs, path, entries):
            raise OutputError(
                f"{out}: holds {_describe(entries)} and no {kind.marker}, so it is not a slamgeo "
                f"{kind.name} folder; refusing to replace it"
            )
    foreign = _foreign(kind, fs, path)
    if foreign:
        raise OutputError(
            f"{out}: a {kind.name} output, but it also holds {_describe({n: entries[n] for n in foreign})}"
            " that slamgeo did not write; refusing to replace it"
        )
    if not (overwrite or resume):
        raise OutputError(f"{out}: a slamgeo {kind.name} output already exists; pass --overwrite to replace it")
    return "own"


def _describe(entries: Mapping[str, str], limit: int = 4) -> str:
    names = sorted(entries)
    shown = ", ".join(n + ("/" if entries[n] == "directory" else "") for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} ({shown}{more})"


def remove_output(out: Location, kind: OutputKind, *, inputs: Sequence[Location] = ()) -> None:
    """Remove the output of `kind` at `out` (nothing when absent), after `claim_output`."""
    if claim_output(out, kind, overwrite=True, inputs=inputs) != "absent":
        remove(out)


def temporary_name(out: Location, tag: str = "tmp", *, hidden: bool = False) -> str:
    """The name of a sibling of `out` to stage a write in: `<name>.<tag>-<pid>-<hex>`, so that a
    later run can tell a temporary of a dead process (`stale_temporaries`)."""
    return f"{'.' if hidden else ''}{name(out)}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Location, kind: OutputKind) -> list[Path]:
    """Remove siblings of a local `out` left by a killed writer of `kind`: named
    `[.]<name>.tmp-<pid>-<hex>` or `.old-` (or `<name>.tmp-<hex>` from older versions), whose
    process is gone, and that hold only what such a writer writes. Returns what was removed."""
    import re

    if is_url(out) and not is_local(out):
        return []  # object storage is written in place, without temporaries
    target = Path(filesystem(out)[1])
    if not target.parent.is_dir():
        return []
    pat = re.compile(rf"^\.?{re.escape(target.name)}\.(?:tmp|old)-(?:(\d+)-)?[0-9a-f]{{8}}$")
    removed = []
    for p in sorted(target.parent.iterdir()):
        m = pat.match(p.name)
        if not m or not p.is_dir() or (m.group(1) and _pid_alive(int(m.group(1)))):
            continue
        fs, path = filesystem(p)
        entries = _entries(fs, str(p))
        own = (not kind.zarr or store_kind(p) == kind.name) and not _foreign(kind, fs, str(p))
        if entries and not own:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


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
    "CHECKPOINT",
    "CUBE",
    "INCOMPLETE",
    "KIND_ATTR",
    "PARCELS",
    "REPORT",
    "RESULTS",
    "SCENE",
    "Location",
    "OutputError",
    "OutputKind",
    "claim_output",
    "remove_output",
    "remove_stale_temporaries",
    "store_kind",
    "temporary_name",
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
    "writing_in_place",
    "write_bytes",
    "write_text",
]
