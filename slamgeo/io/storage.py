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

Every output carries slamgeo's *stamp* from its first byte on (`STAMP_FILE` in a folder,
the root attribute `STAMP_ATTR` of a Zarr store): its kind, the slamgeo version and a random
id. Only a stamped output of the writer's own kind is ever replaced (`claim_output`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from slamgeo._version import __version__
from slamgeo.errors import InputError, OutputError, SlamgeoError
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


def check_scheme(loc: Location, error: type[SlamgeoError] = InputError) -> None:
    """Raise `error`, naming `loc` and its scheme, when `loc` is a URL whose scheme fsspec does
    not know (`foo://...`); nothing for a plain path or a known scheme."""
    text = str(loc)
    if "://" not in text:
        return
    known = set(fsspec.available_protocols()) | set(fsspec.registry)
    parts = text.split("::")  # a chained URL: `simplecache::s3://bucket/key`
    schemes = [p.split("://", 1)[0] for p in parts if "://" in p] + [p for p in parts[:-1] if "://" not in p]
    for scheme in schemes:
        if scheme.lower() not in known:
            raise error(
                f"{loc}: unknown URL scheme '{scheme}://'; give a local path or a URL of a storage that "
                "fsspec knows (file://, s3://, gs://, az://, memory://, ...)"
            )


def filesystem(loc: Location) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `loc` and the path within it. An unknown URL scheme, or one
    whose fsspec package is not installed, is an `InputError` naming `loc`."""
    check_scheme(loc)
    try:
        return fsspec.core.url_to_fs(str(loc))
    except ImportError as exc:  # "Install s3fs to access S3"
        raise InputError(f"{loc}: {exc}") from exc


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
    into place, the old folder moved aside first and removed only then. Object storage: the
    stamp of `src` and an `INCOMPLETE` file go up first (so an interrupted upload is still
    provably slamgeo's), then the old marker and the old folder go, then the new files with
    the kind's marker last, and `INCOMPLETE` is removed; `src` is left for the caller to remove.
    A `dest` that is or holds the current folder is refused (`OutputError`).
    """
    refuse_working_folder(dest)
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
    stamp = src / STAMP_FILE
    with writing_in_place(dest, kind, stamp=stamp.read_bytes() if stamp.is_file() else None):
        fs, root = filesystem(dest)
        keep = {f"{root.rstrip('/')}/{n}" for n in (INCOMPLETE, STAMP_FILE)}
        stale = [f for f in fs.find(root) if f.rstrip("/") not in keep]
        if stale:
            fs.rm(stale)
        upload_folder(src, dest, marker=kind.marker)


@contextlib.contextmanager
def writing_in_place(dest: Location, kind: OutputKind, *, stamp: bytes | None = None) -> Iterator[None]:
    """For a folder output written file by file where it lives (object storage): slamgeo's
    stamp (`stamp`, the bytes of a `STAMP_FILE`, or a new one of `kind`) and an `INCOMPLETE`
    file naming `kind` are there first, `INCOMPLETE` is removed last, and the kind's marker is
    removed first, so the folder is complete only once the marker is back, and an interrupted
    write is still recognised as slamgeo's own (`claim_output`)."""
    if stamp is None:
        stamp_folder(dest, kind)
    else:
        write_bytes(join(dest, STAMP_FILE), stamp)
    write_text(join(dest, INCOMPLETE), kind.name)
    if kind.marker is not None:
        remove(join(dest, kind.marker))
    yield
    remove(join(dest, INCOMPLETE))


@contextlib.contextmanager
def staged_folder(dest: Location, kind: OutputKind) -> Iterator[Path]:
    """A new local folder, holding only slamgeo's stamp of `kind` (`stamp_folder`), to write a
    whole output folder of `kind` into; when the block ends without error it is published to
    `dest` (`publish_folder`), and removed in any case.

    The folder is a hidden sibling of a local `dest` (so that the final rename is atomic; one
    left by a killed run is removed here, `remove_stale_temporaries`) or a temporary folder for
    a URL. A `dest` that is or holds the current folder is refused (`OutputError`)."""
    refuse_working_folder(dest)
    if not is_url(dest) or is_local(dest):
        out = Path(filesystem(dest)[1])
        remove_stale_temporaries(out, kind)
        makedirs(out.parent)
        tmp = out.with_name(temporary_name(out, "tmp", hidden=True))
        tmp.mkdir()  # not mkdtemp: the published folder keeps the umask's permissions, not 0700
    else:
        tmp = Path(tempfile.mkdtemp(prefix="slamgeo-stage-"))
    try:
        stamp_folder(tmp, kind)
        yield tmp
        publish_folder(tmp, dest, kind)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- locations compared
#
# One place decides whether two locations are the same, or one lies inside the other: every
# writer's check of its inputs against its output goes through `contains`.


def _canonical(loc: Location) -> Path | tuple[str, str]:
    """A local location (a plain path, a `file://` URL) as an absolute path with symbolic links
    and `.`/`..` resolved; any other URL as (protocol, path without a trailing slash), the
    protocol as fsspec names it first (`s3a://` is `s3`)."""
    text = str(loc)
    if "://" in text:
        try:
            fs, path = fsspec.core.url_to_fs(text)
        except (ValueError, ImportError):  # a scheme fsspec does not know: compare as written
            scheme, rest = text.split("://", 1)
            return scheme.lower(), rest.rstrip("/")
        if not isinstance(fs, LocalFileSystem):
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            return protocol, path.rstrip("/")
        text = path
    try:
        return Path(text).resolve()
    except (OSError, RuntimeError):  # a loop of symbolic links
        return Path(os.path.abspath(text))


def _identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of an existing local path, None when there is none."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def contains(outer: Location, inner: Location) -> bool:
    """True when `inner` is `outer` or lies below it, whatever the spelling: a `file://` URL,
    a relative path, `./`, `..`, a trailing slash, a symbolic link or a hard link name the same
    local location. Locally, `outer` is compared by (st_dev, st_ino) with `inner` and each of
    its parents (so `inner` need not exist); URLs on object storage by (protocol, bucket/key)."""
    a, b = _canonical(outer), _canonical(inner)
    if isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple)) or a[0] != b[0]:
            return False
        return b[1] == a[1] or b[1].startswith(a[1].rstrip("/") + "/")
    if b == a or a in b.parents:
        return True
    target = _identity(a)
    return target is not None and any(_identity(p) == target for p in (b, *b.parents))


def same_location(a: Location, b: Location) -> bool:
    """True when `a` and `b` name the same file, folder or object prefix (see `contains`)."""
    return contains(a, b) and contains(b, a)


def refuse_working_folder(out: Location) -> None:
    """Raise `OutputError` when the local `out` is or holds the current working folder: an
    output is replaced as a whole (moved aside, then removed), which must never happen to the
    folder slamgeo runs in."""
    if is_url(out) and not is_local(out):
        return
    try:
        cwd = Path.cwd()
    except OSError:  # the current folder was removed
        return
    if contains(out, cwd):
        what = "is the current folder" if same_location(out, cwd) else f"holds the current folder {cwd}"
        raise OutputError(
            f"{out}: {what}; slamgeo writes an output as a whole folder or store and never replaces the "
            "folder it runs in: give a new folder or store below it (for example ./out)"
        )


# --------------------------------------------------------------------------- output ownership
#
# One rule for every writer: an existing output location is replaced only when it carries
# slamgeo's stamp for the same kind of output, never when it holds an input of the command or
# any file, at any depth, that the writer does not write. `claim_output` applies it; writers
# call it before any work.

INCOMPLETE = ".slamgeo-incomplete"  # in a folder output being written in place: holds its kind
STAMP_FILE = ".slamgeo-output.json"  # in a folder output: its stamp, written first
STAMP_ATTR = "slamgeo_output"  # root attribute of a Zarr store: its stamp, written with its metadata
_ZARR_META = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})
_CHUNK_DOTS = re.compile(r"\d+(\.\d+)*")  # a chunk key of Zarr format 2 ("0.1.2") ...
_CHUNK_SLASHES = re.compile(r"\d+(/\d+)*")  # ... with the "/" separator ("0/1/2")
_CHUNK_V3 = re.compile(r"c(/\d+)*")  # the default chunk key of format 3 ("c/0/1/2"; "c" for 0-d)
# a file of zarr's local store written atomically (`<key>.<uuid4 hex>.partial`, renamed to the key
# when complete) and left behind by a writer killed mid-write: zarr never reads it, and it is not
# removed here (a claim is a check; another writer of the store may be mid-write), only with the
# store when the output is replaced
_ZARR_PARTIAL = re.compile(r".+\.[0-9a-f]{32}\.partial")


@dataclass(frozen=True)
class OutputKind:
    """What one writer writes. A Zarr kind (`zarr`): a store of Zarr metadata and chunks only.
    A folder kind: its `marker` file (complete once it is there), the files it writes as paths
    relative to the folder (`files`: glob patterns, `*` within one path segment) and the Zarr
    stores it writes inside the folder (`stores`: relative paths)."""

    name: str
    zarr: bool = False
    marker: str | None = None
    files: tuple[str, ...] = ()
    stores: tuple[str, ...] = ()


CUBE = OutputKind("cube", zarr=True)
RESULTS = OutputKind("results", zarr=True)
CHECKPOINT = OutputKind("checkpoint", marker=MODEL_MARKER, files=(MODEL_MARKER, WEIGHTS_FILE))
PARCELS = OutputKind(
    "parcels",
    marker=PARCELS_MARKER,
    files=(PARCELS_MARKER, "parcels.parquet", "confusion_*.csv"),
    stores=("parcels.zarr", "class_profiles.zarr"),
)
REPORT = OutputKind("report", marker=REPORT_MARKER, files=(REPORT_MARKER, "report.json", "*.png"))
SCENE = OutputKind(
    "scene",  # `write_scene` and `write_archive` (slamgeo.synth)
    marker=SCENE_MARKER,
    files=(
        SCENE_MARKER,
        "stac.json",
        "parcels*.gpkg",
        "phenology.csv",
        "truth.tif",
        "tiffs/S1_VVVH_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].tif",
        "archive/items.json",
        "archive/collection.json",
        "archive/cogs/*_v[vh].tif",
    ),
)


def new_stamp(kind: OutputKind) -> dict[str, str]:
    """slamgeo's stamp of an output of `kind`: {"kind", "version", "id" (16 random hex digits)}."""
    return {"kind": kind.name, "version": __version__, "id": secrets.token_hex(8)}


def stamp_attrs(kind: OutputKind) -> dict[str, object]:
    """The root attributes that stamp a Zarr store of `kind` as slamgeo's: `KIND_ATTR` and
    `STAMP_ATTR` (`new_stamp`). Set them on the dataset before its first write."""
    return {KIND_ATTR: kind.name, STAMP_ATTR: new_stamp(kind)}


def stamp_folder(folder: Location, kind: OutputKind) -> dict[str, str]:
    """Write slamgeo's stamp of `kind` (`new_stamp`) into `folder` as `STAMP_FILE`; returns it."""
    stamp = new_stamp(kind)
    write_text(join(folder, STAMP_FILE), json.dumps(stamp) + "\n")
    return stamp


def _json(fs: fsspec.AbstractFileSystem, path: str) -> object:
    try:
        return json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return None


def _zarr_attrs(fs: fsspec.AbstractFileSystem, path: str) -> dict | None:
    """The root attributes of a Zarr group at `path` (format 2 or 3), None when it is not one."""
    for meta, key in ((".zattrs", None), ("zarr.json", "attributes")):
        doc = _json(fs, f"{path}/{meta}")
        if isinstance(doc, dict):
            attrs = doc.get(key, {}) if key else doc
            return dict(attrs) if isinstance(attrs, dict) else {}
    return None


def _valid_stamp(doc: object) -> dict | None:
    return doc if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc.get("id") else None


def _stamp_at(fs: fsspec.AbstractFileSystem, path: str, listing: Mapping[str, str]) -> tuple[dict, str] | None:
    """slamgeo's stamp of the folder or store at `path` and where it is ("folder" or "store")."""
    if STAMP_FILE in listing:
        stamp = _valid_stamp(_json(fs, f"{path}/{STAMP_FILE}"))
        if stamp is not None:
            return stamp, "folder"
    if ".zattrs" in listing or "zarr.json" in listing:
        stamp = _valid_stamp((_zarr_attrs(fs, path) or {}).get(STAMP_ATTR))
        if stamp is not None:
            return stamp, "store"
    return None


def read_stamp(loc: Location) -> dict | None:
    """slamgeo's stamp of the output at `loc` (see `new_stamp`), None when it has none."""
    fs, path = filesystem(loc)
    path = path.rstrip("/")
    try:
        found = _stamp_at(fs, path, _listing(fs, path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found[0] if found else None


def store_kind(loc: Location) -> str | None:
    """ "cube" or "results" for a Zarr store that carries slamgeo's stamp at `loc`, else None."""
    fs, path = filesystem(loc)
    stamp = _valid_stamp((_zarr_attrs(fs, path.rstrip("/")) or {}).get(STAMP_ATTR))
    return str(stamp["kind"]) if stamp else None


def _listing(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, str]:
    """Every entry under `path`, at any depth (one recursive listing), by its path relative to
    `path` -> "file" or "directory"."""
    root = path.rstrip("/") + "/"
    found = fs.find(path, withdirs=True, detail=True)
    out = {}
    for full, info in found.items():
        full = full.rstrip("/")
        if full.startswith(root):
            out[full[len(root) :]] = "directory" if info.get("type") == "directory" else "file"
    return out


def _zarr_written(files: set[str]) -> set[str]:
    """Those of `files` (paths relative to the root of a Zarr store) that Zarr writes: metadata,
    chunk keys below an array of format 2 (`.zarray`; "0.1.2" or "0/1/2") or format 3
    (`zarr.json`; "c/0/1/2", "c" for a 0-d array), and the partial files of its atomic writes
    (`_ZARR_PARTIAL`) that a killed writer leaves."""
    arrays2 = {f.rpartition("/")[0] for f in files if f.rpartition("/")[2] == ".zarray"}
    nodes3 = {f.rpartition("/")[0] for f in files if f.rpartition("/")[2] == "zarr.json"}
    ok = set()
    for f in files:
        parts = f.split("/")
        if parts[-1] in _ZARR_META or _ZARR_PARTIAL.fullmatch(parts[-1]):
            ok.add(f)
            continue
        for i in range(len(parts) - 1, 0, -1):
            array, key = "/".join(parts[:i]), "/".join(parts[i:])
            if (array in arrays2 and (_CHUNK_DOTS.fullmatch(key) or _CHUNK_SLASHES.fullmatch(key))) or (
                array in nodes3 and _CHUNK_V3.fullmatch(key)
            ):
                ok.add(f)
                break
    return ok


def _matches(rel: str, pattern: str) -> bool:
    """`rel` matches the glob `pattern` segment by segment (`*` never crosses a `/`)."""
    a, b = rel.split("/"), pattern.split("/")
    return len(a) == len(b) and all(fnmatch.fnmatchcase(x, y) for x, y in zip(a, b, strict=True))


def _foreign(kind: OutputKind, listing: Mapping[str, str]) -> list[str]:
    """The entries of `listing` (`_listing`) that a writer of `kind` does not write: files at
    any depth, and folders that hold no file at all (an empty folder of the user's)."""
    files = {r for r, t in listing.items() if t == "file"}
    if kind.zarr:
        ok = _zarr_written(files)
    else:
        ok = {f for f in files if f in (STAMP_FILE, INCOMPLETE) or any(_matches(f, p) for p in kind.files)}
        for store in kind.stores:
            inside = {f[len(store) + 1 :] for f in files if f.startswith(store + "/")}
            ok |= {f"{store}/{f}" for f in _zarr_written(inside)}
    parents = {"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)}
    return sorted(r for r, t in listing.items() if (r not in ok if t == "file" else r not in parents))


def _top(listing: Mapping[str, str]) -> dict[str, str]:
    """The top-level entries of a `_listing`."""
    return {r.split("/", 1)[0]: ("directory" if "/" in r else t) for r, t in listing.items() if r}


def _relation(out: Location, inp: Location) -> str | None:
    """How `out` stands to the input `inp`: "is", "holds", "lies inside", or None."""
    holds, inside = contains(out, inp), contains(inp, out)
    if holds and inside:
        return "is"
    return "holds" if holds else ("lies inside" if inside else None)


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

    Raises `OutputError`, naming `out` and what was found, when `out` is a URL of an unknown
    scheme; when it is or holds the current folder (`refuse_working_folder`); when it is,
    holds or lies inside one of `inputs` (`contains`); when it is a file; when it is a folder
    or store without slamgeo's stamp of `kind` (`STAMP_FILE`, `STAMP_ATTR`); when it holds, at
    any depth, anything such a writer does not write; and, unless `overwrite` (or `resume`: the
    caller continues an incomplete output of its own), when it is an output of `kind` already.
    """
    check_scheme(out, OutputError)
    out = location(out)
    refuse_working_folder(out)
    for inp in inputs:
        relation = _relation(out, inp)
        if relation:
            raise OutputError(f"{out}: the output {relation} the input {inp}; choose another output location")
    what = "store" if kind.zarr else "folder"
    fs, path = filesystem(out)
    path = path.rstrip("/")
    try:
        if fs.isfile(path):
            raise OutputError(f"{out}: is a file, not a {kind.name} {what}; choose another output location")
        if not fs.exists(path):
            return "absent"
        listing = _listing(fs, path)
    except FileNotFoundError:
        return "absent"
    if not listing:
        return "empty"
    found = _stamp_at(fs, path, listing)
    if found is None:
        top = _top(listing)
        held = "a Zarr store" if top.keys() & {".zgroup", "zarr.json"} else _describe(top)
        raise OutputError(
            f"{out}: holds {held} without slamgeo's stamp, so it is not a slamgeo {kind.name} {what}; "
            "refusing to replace it (choose another output location, or remove it yourself)"
        )
    stamp, where = found
    if stamp["kind"] != kind.name:
        raise OutputError(
            f"{out}: holds a slamgeo {stamp['kind']} {where}, not a slamgeo {kind.name} {what}; refusing to replace it"
        )
    foreign = _foreign(kind, listing)
    if foreign:
        raise OutputError(
            f"{out}: a slamgeo {kind.name} output, but it also holds {_describe({f: listing[f] for f in foreign})}"
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
    process is gone, and that are empty or carry slamgeo's stamp of `kind` and hold only what
    such a writer writes. Returns what was removed."""
    if is_url(out) and not is_local(out):
        return []  # object storage is written in place, without temporaries
    target = Path(filesystem(out)[1])
    if not target.name or not target.parent.is_dir():
        return []
    pat = re.compile(rf"^\.?{re.escape(target.name)}\.(?:tmp|old)-(?:(\d+)-)?[0-9a-f]{{8}}$")
    removed = []
    for p in sorted(target.parent.iterdir()):
        m = pat.match(p.name)
        if not m or p.is_symlink() or not p.is_dir() or (m.group(1) and _pid_alive(int(m.group(1)))):
            continue
        fs, path = filesystem(p)
        listing = _listing(fs, path)
        found = _stamp_at(fs, path, listing)
        own = found is not None and found[0]["kind"] == kind.name and not _foreign(kind, listing)
        if listing and not own:
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
    "STAMP_ATTR",
    "STAMP_FILE",
    "Location",
    "OutputError",
    "OutputKind",
    "check_scheme",
    "claim_output",
    "contains",
    "new_stamp",
    "read_stamp",
    "refuse_working_folder",
    "same_location",
    "stamp_attrs",
    "stamp_folder",
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
