"""Parcels files: read polygons (GeoPackage, shapefile, GeoParquet; a local path or an fsspec
URL) and check them before anything is computed on them.

Policies (said once, here, and recorded in the checked GeoDataFrame's `attrs`):
- parcel ids are positive integers, unique; 0 (`NO_PARCEL`) means "no parcel" on a parcel-id
  raster (`slamgeo.jobs.rasterize`);
- invalid geometries (self-intersections, ...) are repaired with `shapely.make_valid`, keeping
  their polygonal part, with a `ParcelWarning` naming the file and the count; their ids are
  listed in `gdf.attrs["repaired_ids"]`, their count in `gdf.attrs["repaired"]`. Null, empty or
  non-polygonal geometries are refused;
- overlapping pairs are listed in `gdf.attrs["overlaps"]` (`find_overlaps`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.schema import CLASS_COLUMN, ID_COLUMN

NO_PARCEL = 0
_PARQUET_SUFFIXES = {".parquet", ".geoparquet", ".pq"}


class ParcelWarning(UserWarning):
    """Something about the parcels the user should know, that does not stop the run."""


def _read_any(path: str | Path, layer: str | None) -> gpd.GeoDataFrame:
    """A local path is read by name (a shapefile needs its sibling files); a URL through an
    fsspec file object (pyogrio reads it into GDAL's memory filesystem)."""
    parquet = Path(storage.name(path)).suffix.lower() in _PARQUET_SUFFIXES
    try:
        if not storage.is_url(path):
            return gpd.read_parquet(path) if parquet else gpd.read_file(path, layer=layer, engine="pyogrio")
        with storage.open_input(path) as f, warnings.catch_warnings():
            # GDAL names the bytes it is given without the file's extension, and says so
            warnings.filterwarnings("ignore", message=".*non conformant file extension")
            return gpd.read_parquet(f) if parquet else gpd.read_file(f, layer=layer, engine="pyogrio")
    except Exception as exc:  # noqa: BLE001 - pyogrio/pyarrow raise many types; say which file
        raise InputError(f"{path}: cannot read parcels as GeoPackage, shapefile or GeoParquet ({exc})") from exc


def _check_ids(ids: pd.Series, where: str, id_column: str) -> np.ndarray:
    if ids.isna().any():
        raise InputError(f"{where}: {int(ids.isna().sum())} parcel(s) have no id in column '{id_column}'")
    values = ids.to_numpy()
    if not np.issubdtype(values.dtype, np.integer):
        as_float = pd.to_numeric(ids, errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(as_float).any() or np.any(as_float != np.round(as_float)):
            bad = ids[np.isnan(as_float) | (as_float != np.round(as_float))].head(5).tolist()
            raise InputError(f"{where}: parcel ids in '{id_column}' must be integers, found {bad}")
        values = as_float.astype(np.int64)
    if values.min() <= NO_PARCEL or values.max() > np.iinfo(np.int32).max:
        raise InputError(
            f"{where}: parcel ids in '{id_column}' must be in 1..{np.iinfo(np.int32).max} (0 means no parcel), "
            f"found min {values.min()}, max {values.max()}"
        )
    uniq, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{where}: duplicated parcel ids in '{id_column}': {uniq[counts > 1][:10].tolist()}")
    return values.astype(np.int64)


def _polygonal(geom):
    """The polygonal part of a repaired geometry (make_valid can return collections with lines)."""
    if geom is None or geom.is_empty:
        return geom
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def find_overlaps(parcels: gpd.GeoDataFrame, *, id_column: str = ID_COLUMN) -> list[tuple[int, int]]:
    """Pairs of parcel ids `(a, b)`, `a < b`, whose interiors overlap (shared area > 0)."""
    geoms = parcels.geometry.to_numpy()
    left, right = parcels.sindex.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if left.size == 0:
        return []
    area = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    ids = parcels[id_column].to_numpy()
    pairs = {tuple(sorted((int(ids[a]), int(ids[b])))) for a, b, s in zip(left, right, area) if s > 0}
    return sorted(cast(set[tuple[int, int]], pairs))  # pairs of two ids


def read_parcels(
    path: str | Path,
    *,
    id_column: str = ID_COLUMN,
    class_column: str = CLASS_COLUMN,
    crs=None,
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Read parcels (GeoPackage, shapefile, GeoParquet; a local path or an fsspec URL) and
    `check_parcels` them. Raises `InputError` for a missing or unreadable file too."""
    path = storage.location(path)
    if not storage.exists(path):
        raise InputError(f"{path}: no parcel file here")
    gdf = _read_any(path, layer)
    gdf.attrs["source"] = str(path)
    return check_parcels(gdf, id_column=id_column, class_column=class_column, crs=crs)


def check_parcels(
    gdf: gpd.GeoDataFrame,
    *,
    id_column: str = ID_COLUMN,
    class_column: str = CLASS_COLUMN,
    crs=None,
) -> gpd.GeoDataFrame:
    """Check parcels, repair invalid geometries, reproject to `crs` when given and different.

    Returns a GeoDataFrame with columns `id_column` (int64), `class_column` and `geometry`, in
    the input's order; `attrs`: `repaired_ids` (list), `repaired` (their count), `overlaps`
    (list of id pairs), `source` (`gdf.attrs["source"]`, or "parcels"). Repairs are also said
    in a `ParcelWarning` naming the source and the count. Parcels checked already (with the same
    columns) are only reprojected. Raises `InputError` for an empty layer, a missing column,
    bad ids, null/empty/non-polygonal geometries, or a layer without a CRS.
    """
    path = gdf.attrs.get("source", "parcels")
    if gdf.attrs.get("checked") == [id_column, class_column]:
        return gdf if crs is None or gdf.crs.equals(crs) else _with_attrs(gdf.to_crs(crs), gdf.attrs)
    if len(gdf) == 0:
        raise InputError(f"{path}: the parcel layer is empty (0 features)")
    missing = [c for c in (id_column, class_column) if c not in gdf.columns]
    if missing:
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InputError(f"{path}: missing column(s) {missing} (id and class columns); found columns {cols}")
    ids = _check_ids(gdf[id_column], str(path), id_column)
    geom = gdf.geometry
    bad = geom.isna() | geom.is_empty
    if bad.any():
        raise InputError(f"{path}: parcel(s) {ids[bad.to_numpy()][:10].tolist()} have a null or empty geometry")
    kinds = set(geom.geom_type.unique()) - {"Polygon", "MultiPolygon"}
    if kinds:
        wrong = ids[~geom.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()][:10].tolist()
        raise InputError(f"{path}: parcels must be polygons; found {sorted(kinds)} (ids {wrong})")
    if gdf.crs is None:
        raise InputError(f"{path}: the parcel layer has no CRS; cannot place it on the cube's grid")

    invalid = ~geom.is_valid.to_numpy()
    repaired = ids[invalid].tolist()
    out = gpd.GeoDataFrame(
        {id_column: ids, class_column: gdf[class_column].to_numpy()}, geometry=geom.to_numpy(), crs=gdf.crs
    )
    if invalid.any():
        fixed = [_polygonal(g) for g in shapely.make_valid(out.geometry.to_numpy()[invalid])]
        empty = [i for i, g in zip(repaired, fixed) if g is None or g.is_empty]
        if empty:
            raise InputError(f"{path}: parcel(s) {empty[:10]} have an invalid geometry with no area left once repaired")
        out.loc[invalid, "geometry"] = gpd.GeoSeries(fixed, index=out.index[invalid], crs=gdf.crs)
        warnings.warn(
            f"{path}: repaired {len(repaired)} invalid parcel geometr{'y' if len(repaired) == 1 else 'ies'} "
            f"(self-intersections, ...) with make_valid (ids {repaired[:10]}{' ...' if len(repaired) > 10 else ''})",
            ParcelWarning,
            stacklevel=2,
        )
    if crs is not None and not out.crs.equals(crs):
        out = out.to_crs(crs)
    out.attrs = {
        "source": str(path),
        "checked": [id_column, class_column],
        "repaired_ids": [int(i) for i in repaired],
        "repaired": len(repaired),
        "overlaps": find_overlaps(out, id_column=id_column),
        "id_column": id_column,
        "class_column": class_column,
    }
    return out


def _with_attrs(gdf: gpd.GeoDataFrame, attrs: dict) -> gpd.GeoDataFrame:
    gdf.attrs = dict(attrs)
    return gdf


__all__ = ["NO_PARCEL", "ParcelWarning", "check_parcels", "find_overlaps", "read_parcels"]
