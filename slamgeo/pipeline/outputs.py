"""What a finished pipeline step leaves behind, and whether it is still all there.

A step is skipped only when its outputs are complete (`missing` says what is not): a Zarr store
of slamgeo's must carry `slamgeo_complete` and hold every variable the step writes, each with
its own array metadata (an array folder removed by hand is noticed, though the consolidated
metadata still names it); for a store one step writes whole (a cube), every array its
consolidated metadata lists must be there too. A file or a folder must exist. Locations are local paths or fsspec URLs (`slamgeo.io.storage`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from slamgeo.io import storage
from slamgeo.schema import COMPLETE_ATTR

_ARRAY_META = (".zarray", "zarr.json")  # an array's own metadata, Zarr format 2 or 3


@dataclass(frozen=True)
class Output:
    """One output of a step: a file or folder that must exist, or (`store`) a Zarr store of
    slamgeo's that must be complete and hold `variables` (and, with `all_listed`, every array
    its consolidated metadata lists)."""

    location: storage.Location
    store: bool = False
    variables: tuple[str, ...] = ()
    all_listed: bool = False


def store(location: storage.Location, variables: Iterable[str] = (), *, all_listed: bool = False) -> Output:
    """A Zarr store written by slamgeo (`slamgeo_complete` set last) holding `variables`;
    `all_listed`: and every array its consolidated metadata lists (a store written by one step)."""
    return Output(location, store=True, variables=tuple(variables), all_listed=all_listed)


def path(location: storage.Location) -> Output:
    """A file, or a folder, that must exist."""
    return Output(location)


def _json(loc: storage.Location) -> dict | None:
    try:
        doc = json.loads(storage.read_text(loc))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return doc if isinstance(doc, dict) else None


def _root_metadata(loc: storage.Location) -> tuple[dict, list[str]] | None:
    """The root attributes of the Zarr group at `loc` and the top-level arrays its consolidated
    metadata lists (format 2 or 3); None when there is no group."""
    zattrs = _json(storage.join(loc, ".zattrs"))
    if zattrs is not None or storage.exists(storage.join(loc, ".zgroup")):
        listed = (_json(storage.join(loc, ".zmetadata")) or {}).get("metadata", {})
        arrays = [k.split("/")[0] for k in listed if k.count("/") == 1 and k.endswith("/.zarray")]
        return zattrs or {}, arrays
    root = _json(storage.join(loc, "zarr.json"))
    if root is None:
        return None
    listed = (root.get("consolidated_metadata") or {}).get("metadata", {})
    arrays = [k for k, m in listed.items() if "/" not in k and isinstance(m, dict) and m.get("node_type") == "array"]
    return dict(root.get("attributes", {})), arrays


def _store_problem(loc: storage.Location, variables: tuple[str, ...], all_listed: bool) -> str | None:
    meta = _root_metadata(loc)
    if meta is None:
        return "is missing" if not storage.exists(loc) else "is not a Zarr store"
    attrs, listed = meta
    if not attrs.get(COMPLETE_ATTR, False):
        return "is incomplete (its writer did not finish)"
    wanted = list(dict.fromkeys([*variables, *(listed if all_listed else ())]))
    gone = [v for v in wanted if not any(storage.exists(storage.join(loc, v, m)) for m in _ARRAY_META)]
    if gone:
        names = ", ".join(repr(v) for v in gone)
        return f"has no variable {names}" if len(gone) == 1 else f"has no variables {names}"
    return None


def _shown(loc: storage.Location, root: storage.Location | None) -> str:
    """`loc` relative to `root` when it lies below it, else in full."""
    text, base = str(loc), None if root is None else str(root).rstrip("/")
    if base and text.startswith(base + "/"):
        return text[len(base) + 1 :]
    return text


def missing(outputs: Iterable[Output], *, root: storage.Location | None = None) -> str | None:
    """Why `outputs` are not all there and complete (one phrase naming the first output that is
    not, relative to `root`), or None when they are."""
    for out in outputs:
        if out.store:
            problem = _store_problem(out.location, out.variables, out.all_listed)
        else:
            problem = None if storage.exists(out.location) else "is missing"
        if problem:
            return f"{_shown(out.location, root)} {problem}"
    return None


__all__ = ["Output", "missing", "path", "store"]
