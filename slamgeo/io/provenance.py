"""Fingerprints and provenance attributes that make a result reproducible."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import xarray as xr


def fingerprint(obj: Any) -> str:
    """sha256 (hex, 16 chars) of a JSON-serialisable object, keys sorted."""
    payload = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def dataset_fingerprint(ds: xr.Dataset) -> str:
    """Fingerprint of a dataset's identity: its store fingerprint if ingest wrote one, else
    variables, shapes, dtypes and coordinate values (not the data, which may be huge)."""
    base = ds.attrs.get("fingerprint") or ds.attrs.get("input_fingerprint")
    coords = {}
    for name, c in ds.coords.items():
        if c.ndim == 1 and c.size <= 100_000:
            coords[str(name)] = hashlib.sha256(np.ascontiguousarray(c.values).tobytes()).hexdigest()[:16]
    return fingerprint(
        {
            "base": base,
            "vars": {str(k): [list(v.dims), list(v.shape), str(v.dtype)] for k, v in ds.data_vars.items()},
            "coords": coords,
        }
    )


def versions() -> dict[str, str]:
    """Versions of slamgeo and the libraries that shape its numbers."""
    import importlib.metadata as md

    out = {}
    for pkg in ("slamgeo", "torch", "numpy", "xarray", "dask", "distributed", "zarr", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


__all__ = ["dataset_fingerprint", "fingerprint", "versions"]
