"""Ingest: every source kind -> the cube contract; bad inputs -> one clear error, no output."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import xarray as xr
import zarr
from rasterio.transform import from_origin

from slamgeo.errors import ConfigError, InputError, OutputError
from slamgeo.io.cube import COMPLETE_ATTR, is_complete, make_cube, write_cube
from slamgeo.io.ingest import detect_source, ingest, input_fingerprint, open_source
from slamgeo.io.readers._common import dn_to_db
from slamgeo.io.readers.dataset import open_dataset_cube
from slamgeo.io.readers.geotiff import describe_tiff
from slamgeo.io.readers.table import open_table

ROOT = Path(__file__).resolve().parents[1]
WORLDCEREAL = ROOT.parent / "shared" / "data" / "worldcereal"
OPENEO_NC = WORLDCEREAL / "openeo_cube_utm31n_2021.nc"
LPIS_TABLE = WORLDCEREAL / "fra_2023_lpis_dekad.parquet"
LEGEND = WORLDCEREAL / "crop_type_class_mappings.csv"

H, W, CHUNK = 20, 24, 8
TRANSFORM = from_origin(500_000.0, 4_200_000.0, 10.0, 10.0)
D0 = dt.date(2023, 1, 1)


# --- fixtures: GeoTIFFs in the product format of slamgeo.synth -------------------------------------


def write_tif(
    path: Path,
    power: np.ndarray,
    date: dt.date | None,
    *,
    crs: str = "EPSG:32630",
    transform=TRANSFORM,
    descriptions: tuple[str, ...] = ("VV", "VH"),
    acquisition_tag: str | None = None,
    datetime_tag: str | None = None,
) -> Path:
    """A tiled DEFLATE GeoTIFF of linear power (bands, y, x), nodata 0, tags as synth writes."""
    power = np.asarray(power, dtype=np.float32)
    count, h, w = power.shape
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=count,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=0.0,
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(power)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        tags = {}
        if date is not None:
            tags = {"ACQUISITION_DATE": date.isoformat(), "TIFFTAG_DATETIME": date.strftime("%Y:%m:%d 00:00:00")}
        if acquisition_tag is not None:
            tags["ACQUISITION_DATE"] = acquisition_tag
        if datetime_tag is not None:
            tags["TIFFTAG_DATETIME"] = datetime_tag
        if tags:
            dst.update_tags(**tags)
    return path


def power_stack(n: int = 4, seed: int = 0) -> np.ndarray:
    """Linear power (T, 2, H, W) with a no-data pixel (0) and a negative one on every date."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.001, 0.5, (n, 2, H, W)).astype(np.float32)
    p[:, :, 0, 0] = 0.0
    p[:, :, 1, 1] = -0.01
    return p


def day(k: int) -> dt.date:
    return D0 + dt.timedelta(days=6 * k)


def write_stack(folder: Path, power: np.ndarray | None = None) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    power = power_stack() if power is None else power
    for k, p in enumerate(power):
        write_tif(folder / f"S1_VVVH_{day(k):%Y%m%d}.tif", p, day(k))
    return power


def expected_db(power: np.ndarray) -> np.ndarray:
    """Independent reference: 10 log10 in float64, NaN where power <= 0."""
    p = power.astype(np.float64)
    out = np.full(p.shape, np.nan)
    np.log10(p, out=out, where=p > 0)
    return out * 10


def tree_state(*paths: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under `paths`: inputs must come out unchanged."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(q for q in root.rglob("*") if q.is_file())
        for f in files:
            out[str(f)] = (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
    return out


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}.tmp-*"))


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Path, np.ndarray]:
    folder = tmp_path / "tiffs"
    return folder, write_stack(folder)


# --- conversions ---------------------------------------------------------------------------------


def test_dn_to_db_is_20_log10_minus_83_with_0_and_65535_as_nodata() -> None:
    dn = np.array([1, 10, 1000, 14125, 65534, 0, 65535], dtype=np.uint16)
    ref = [20 * np.log10(float(v)) - 83 for v in dn[:5]]
    out = dn_to_db(dn)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:5], ref, rtol=1e-6)
    assert np.isnan(out[5:]).all()


# --- GeoTIFFs --------------------------------------------------------------------------------------


def test_geotiff_folder_becomes_db_of_the_written_power(stack, tmp_path) -> None:
    folder, power = stack
    before = tree_state(folder)
    cube = xr.open_zarr(ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False), decode_coords="all")
    assert tree_state(folder) == before  # inputs are only read
    for b, band in enumerate(("VV", "VH")):
        assert cube[band].dtype == np.float32
        assert cube[band].dims == ("time", "y", "x")
        np.testing.assert_allclose(cube[band].values, expected_db(power[:, b]), atol=1e-5, equal_nan=True)


def test_nodata_and_nonpositive_power_become_nan(stack, tmp_path) -> None:
    folder, _ = stack
    cube = xr.open_zarr(ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False))
    vv = cube["VV"].values
    assert np.isnan(vv[:, 0, 0]).all() and np.isnan(vv[:, 1, 1]).all()
    assert np.isnan(vv).sum() == 2 * vv.shape[0]


def test_geotiff_cube_has_sorted_dates_from_the_files(stack, tmp_path) -> None:
    folder, power = stack
    cube = xr.open_zarr(ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False))
    expected = np.array([np.datetime64(day(k), "ns") for k in range(len(power))])
    np.testing.assert_array_equal(cube["time"].values, expected)


def test_cube_opens_in_rioxarray_with_the_crs_and_transform_of_the_tiffs(stack, tmp_path) -> None:
    folder, _ = stack
    cube = xr.open_zarr(ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False), decode_coords="all")
    assert cube.rio.crs.to_epsg() == 32630
    assert cube.rio.transform() == TRANSFORM
    np.testing.assert_allclose(cube["x"].values, 500_000 + 10 * np.arange(W) + 5)
    np.testing.assert_allclose(cube["y"].values, 4_200_000 - 10 * np.arange(H) - 5)


def test_gdal_reads_the_georeferencing_of_the_zarr_store(stack, tmp_path) -> None:
    folder, power = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    with rasterio.open(f'ZARR:"{out}":/VV') as src:
        assert src.crs.to_epsg() == 32630
        assert src.transform == TRANSFORM
        assert (src.count, src.height, src.width) == (len(power), H, W)
        np.testing.assert_allclose(src.read(2), expected_db(power[1, 0]), atol=1e-5, equal_nan=True)


def test_store_chunks_hold_the_whole_time_axis_and_spatial_tiles(stack, tmp_path) -> None:
    folder, power = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    meta = json.loads((out / "VV" / ".zarray").read_text())
    assert meta["chunks"] == [len(power), CHUNK, CHUNK]
    assert meta["zarr_format"] == 2


def test_zarr_format_3_is_an_option(stack, tmp_path) -> None:
    folder, power = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, zarr_format=3, progress=False)
    assert json.loads((out / "zarr.json").read_text())["zarr_format"] == 3
    cube = xr.open_zarr(out, decode_coords="all")
    assert cube.rio.crs.to_epsg() == 32630
    np.testing.assert_allclose(cube["VH"].values, expected_db(power[:, 1]), atol=1e-5, equal_nan=True)


def test_store_records_sources_fingerprint_version_and_completion(stack, tmp_path) -> None:
    folder, _ = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    attrs = xr.open_zarr(out).attrs
    assert attrs["source"] == [str(folder)]
    assert attrs["source_kind"] == "geotiff"
    assert attrs["input_fingerprint"] == input_fingerprint(sorted(folder.glob("*.tif")))
    assert attrs["slamgeo_version"]
    assert dt.datetime.fromisoformat(attrs["created"]).tzinfo is not None
    assert attrs[COMPLETE_ATTR] is True
    assert is_complete(out)


def test_fingerprint_changes_when_an_input_file_changes(stack) -> None:
    folder, power = stack
    files = sorted(folder.glob("*.tif"))
    before = input_fingerprint(files)
    write_tif(files[0], power[0] * 2, day(0))
    assert input_fingerprint(files) != before


def test_fingerprint_of_a_folder_covers_its_files(stack, tmp_path) -> None:
    folder, _ = stack  # a Zarr store given as input (pipeline input kind "cube") is a folder
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    before = input_fingerprint([out])
    assert input_fingerprint([out]) == before
    chunk = out / "VV" / "0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"x")
    assert input_fingerprint([out]) != before


def test_a_list_of_files_ingests_like_their_folder(stack, tmp_path) -> None:
    folder, _ = stack
    a = xr.open_zarr(ingest([folder], tmp_path / "a.zarr", chunk=CHUNK, progress=False))
    files = [str(f) for f in sorted(folder.glob("*.tif"), reverse=True)]
    b = xr.open_zarr(ingest(files, tmp_path / "b.zarr", chunk=CHUNK, progress=False))
    xr.testing.assert_equal(a[["VV", "VH"]], b[["VV", "VH"]])
    assert a.attrs["input_fingerprint"] == b.attrs["input_fingerprint"]


def test_single_band_files_per_polarisation_are_paired_by_date(tmp_path) -> None:
    power = power_stack(n=2)
    folder = tmp_path / "pol"
    folder.mkdir()
    for k in range(2):
        for b, pol in enumerate(("VV", "VH")):
            write_tif(folder / f"S1_{day(k):%Y%m%d}_{pol}.tif", power[k, b : b + 1], day(k), descriptions=())
    cube = xr.open_zarr(ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False))
    np.testing.assert_allclose(cube["VH"].values, expected_db(power[:, 1]), atol=1e-5, equal_nan=True)


@pytest.mark.parametrize(
    ("name", "acquisition", "datetime_tag", "expected"),
    [
        ("S1_VVVH_20230101.tif", "2023-03-05", "2023:04:06 00:00:00", "2023-03-05"),
        ("S1_VVVH_20230101.tif", None, "2023:04:06 10:30:00", "2023-04-06T10:30"),
        ("S1_VVVH_20230107.tif", None, None, "2023-01-07"),
    ],
    ids=["acquisition-tag-first", "then-tifftag-datetime", "then-file-name"],
)
def test_date_comes_from_acquisition_tag_then_tiff_datetime_then_file_name(
    tmp_path, name, acquisition, datetime_tag, expected
) -> None:
    path = write_tif(tmp_path / name, power_stack(1)[0], None, acquisition_tag=acquisition, datetime_tag=datetime_tag)
    assert describe_tiff(str(path)).time == np.datetime64(expected, "ns")


def test_start_and_end_select_dates_inclusively(stack, tmp_path) -> None:
    folder, _ = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, start=str(day(1)), end=str(day(2)), progress=False)
    times = xr.open_zarr(out)["time"].values
    np.testing.assert_array_equal(times, np.array([np.datetime64(day(1), "ns"), np.datetime64(day(2), "ns")]))


def test_open_source_is_lazy(stack) -> None:
    folder, _ = stack
    ds = open_source([folder], chunk=CHUNK)
    assert ds["VV"].chunks is not None
    assert ds["VV"].chunks[0] == (4,)


# --- STAC -------------------------------------------------------------------------------------------


def write_item_collection(
    path: Path, tiffs: list[Path], dates: list[dt.date], *, per_pol: bool = False, hrefs: str = "relative"
) -> Path:
    """An ItemCollection, one Item per date; asset hrefs relative to the JSON, absolute, or file URLs."""
    items = []
    for k, (tif, d) in enumerate(zip(tiffs, dates)):
        item = pystac.Item(
            id=f"item-{k}",
            geometry={"type": "Point", "coordinates": [-3.0, 37.9]},
            bbox=[-3.0, 37.9, -3.0, 37.9],
            datetime=dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC),
            properties={},
        )
        rel = {
            "relative": lambda t: str(t.relative_to(path.parent)),
            "absolute": str,
            "file-url": lambda t: t.resolve().as_uri(),
        }[hrefs](tif)
        if per_pol:
            item.add_asset("vv", pystac.Asset(href=rel.replace("_VH", "_VV"), media_type=pystac.MediaType.GEOTIFF))
            item.add_asset("vh", pystac.Asset(href=rel.replace("_VV", "_VH"), media_type=pystac.MediaType.GEOTIFF))
        else:
            item.add_asset("backscatter", pystac.Asset(href=rel, media_type=pystac.MediaType.GEOTIFF))
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(path))
    return path


@pytest.mark.parametrize("hrefs", ["relative", "absolute", "file-url"])
def test_stac_item_collection_ingests_like_the_tiffs(stack, tmp_path, hrefs) -> None:
    folder, power = stack
    tiffs = sorted(folder.glob("*.tif"))
    stac = write_item_collection(tmp_path / "items.json", tiffs, [day(k) for k in range(4)], hrefs=hrefs)
    cube = xr.open_zarr(ingest([stac], tmp_path / "c.zarr", chunk=CHUNK, progress=False), decode_coords="all")
    assert cube.rio.crs.to_epsg() == 32630
    assert cube.attrs["source_kind"] == "stac"
    np.testing.assert_allclose(cube["VV"].values, expected_db(power[:, 0]), atol=1e-5, equal_nan=True)


def test_stac_item_datetime_is_the_date(stack, tmp_path) -> None:
    folder, _ = stack
    dates = [dt.date(2024, 5, 1 + k) for k in range(4)]
    stac = write_item_collection(tmp_path / "items.json", sorted(folder.glob("*.tif")), dates)
    times = open_source([stac], chunk=CHUNK)["time"].values
    np.testing.assert_array_equal(times, np.array([np.datetime64(d, "ns") for d in dates]))


def test_stac_per_polarisation_assets_are_read(tmp_path) -> None:
    power = power_stack(n=2)
    (tmp_path / "pol").mkdir()
    tiffs = []
    for k in range(2):
        for b, pol in enumerate(("VV", "VH")):
            write_tif(tmp_path / "pol" / f"S1_{day(k):%Y%m%d}_{pol}.tif", power[k, b : b + 1], day(k), descriptions=())
        tiffs.append(tmp_path / "pol" / f"S1_{day(k):%Y%m%d}_VV.tif")
    stac = write_item_collection(tmp_path / "items.json", tiffs, [day(0), day(1)], per_pol=True)
    ds = open_source([stac], chunk=CHUNK)
    np.testing.assert_allclose(ds["VH"].values, expected_db(power[:, 1]), atol=1e-5, equal_nan=True)


def test_stac_asset_that_does_not_exist_is_an_error_naming_the_item(stack, tmp_path) -> None:
    folder, _ = stack
    tiffs = sorted(folder.glob("*.tif"))
    stac = write_item_collection(tmp_path / "items.json", tiffs, [day(k) for k in range(4)])
    tiffs[2].unlink()
    with pytest.raises(InputError, match=r"item item-2.*not found"):
        ingest([stac], tmp_path / "c.zarr", progress=False)
    assert_no_output(tmp_path / "c.zarr")


# --- NetCDF / Zarr cubes ----------------------------------------------------------------------


def test_openeo_netcdf_becomes_a_db_cube_with_its_crs(tmp_path) -> None:
    import netCDF4

    out = ingest([OPENEO_NC], tmp_path / "c.zarr", chunk=64, progress=False)
    cube = xr.open_zarr(out, decode_coords="all")
    assert cube.sizes == {"time": 12, "y": 100, "x": 100}
    assert cube.rio.crs.to_epsg() == 32631
    assert cube["time"].values[0] == np.datetime64("2020-11-01", "ns")
    with netCDF4.Dataset(OPENEO_NC) as nc:  # independent reader, raw digital numbers
        nc.set_auto_maskandscale(False)
        raw = {b: np.asarray(nc[f"S1-SIGMA0-{b}"][:]).view(np.uint16) for b in ("VV", "VH")}
        x, y = np.asarray(nc["x"][:]), np.asarray(nc["y"][:])
    for band, dn in raw.items():
        ref = np.where((dn > 0) & (dn < 65535), 20 * np.log10(np.maximum(dn, 1).astype(np.float64)) - 83, np.nan)
        np.testing.assert_allclose(cube[band].values, ref, atol=1e-4, equal_nan=True)
    res = x[1] - x[0]
    assert cube.rio.transform() == rasterio.Affine(res, 0, x[0] - res / 2, 0, y[1] - y[0], y[0] + res / 2)


def test_gdal_reads_the_georeferencing_of_the_ingested_openeo_cube(tmp_path) -> None:
    out = ingest([OPENEO_NC], tmp_path / "c.zarr", chunk=64, progress=False)
    with rasterio.open(f'ZARR:"{out}":/VH') as src:
        assert src.crs.to_epsg() == 32631
        assert (src.transform.a, src.transform.e) == (10.0, -10.0)
        assert src.count == 12


def test_a_db_zarr_cube_is_reingested_unchanged(stack, tmp_path) -> None:
    folder, _ = stack
    first = ingest([folder], tmp_path / "a.zarr", chunk=CHUNK, progress=False)
    second = ingest([first], tmp_path / "b.zarr", chunk=CHUNK, progress=False)
    a, b = xr.open_zarr(first, decode_coords="all"), xr.open_zarr(second, decode_coords="all")
    xr.testing.assert_equal(a[["VV", "VH"]], b[["VV", "VH"]])
    assert b.rio.crs == a.rio.crs


def test_a_table_cube_zarr_is_reingested_with_its_labels(tmp_path) -> None:
    first = ingest([LPIS_TABLE], tmp_path / "a.zarr", start="2023-06-01", end="2023-06-30", progress=False)
    second = ingest([first], tmp_path / "b.zarr", progress=False)
    a, b = xr.open_zarr(first), xr.open_zarr(second)
    xr.testing.assert_equal(a[["VV", "VH"]], b[["VV", "VH"]])
    assert {"label", "label_name", "level_2", "level_3", "lon", "lat"} <= set(b.coords)


def test_linear_power_netcdf_with_time_dim_is_converted(tmp_path) -> None:
    power = power_stack(n=3)
    ds = xr.Dataset(
        {b: (("time", "y", "x"), power[:, i]) for i, b in enumerate(("VV", "VH"))},
        coords={
            "time": pd.date_range("2023-01-01", periods=3, freq="6D"),
            "y": 4_200_000 - 10 * np.arange(H) - 5.0,
            "x": 500_000 + 10 * np.arange(W) + 5.0,
        },
    ).rio.write_crs("EPSG:32630")
    ds.to_netcdf(tmp_path / "power.nc")
    out = open_dataset_cube(tmp_path / "power.nc", chunk=CHUNK)
    assert out.rio.crs.to_epsg() == 32630
    np.testing.assert_allclose(out["VV"].values, expected_db(power[:, 0]), atol=1e-5, equal_nan=True)


def test_an_incomplete_zarr_cube_is_refused(stack, tmp_path) -> None:
    folder, _ = stack
    cube = ingest([folder], tmp_path / "a.zarr", chunk=CHUNK, progress=False)
    zarr.open_group(str(cube), mode="r+").attrs[COMPLETE_ATTR] = False
    zarr.consolidate_metadata(str(cube))
    with pytest.raises(InputError, match="not written completely"):
        ingest([cube], tmp_path / "b.zarr", progress=False)
    assert_no_output(tmp_path / "b.zarr")


# --- long tables ----------------------------------------------------------------------------------


def test_worldcereal_table_becomes_a_time_sample_cube_for_2023(tmp_path) -> None:
    out = ingest([LPIS_TABLE], tmp_path / "t.zarr", start="2023-01-01", end="2023-12-31", progress=False)
    cube = xr.open_zarr(out)
    assert cube["VV"].dims == ("time", "sample")
    assert cube.sizes == {"time": 36, "sample": 500}
    assert set(pd.DatetimeIndex(cube["time"].values).day) == {1, 11, 21}  # dekads: 3 a month, 12 months
    assert list(cube["sample"].values) == sorted(cube["sample"].values)
    # Independent: pandas pivot of the raw DN for the same year, the formula in float64.
    df = pd.read_parquet(LPIS_TABLE, columns=["sample_id", "timestamp", "S1-SIGMA0-VV", "ewoc_code"])
    df = df[(df.timestamp >= "2023-01-01") & (df.timestamp < "2024-01-01")]
    dn = df.pivot(index="timestamp", columns="sample_id", values="S1-SIGMA0-VV").sort_index()
    dn = dn[sorted(dn.columns)].to_numpy(dtype=np.float64)
    ref = np.where((dn > 0) & (dn < 65535), 20 * np.log10(np.where(dn > 0, dn, 1)) - 83, np.nan)
    np.testing.assert_allclose(cube["VV"].values, ref, atol=1e-4, equal_nan=True)
    codes = df.groupby("sample_id")["ewoc_code"].first().sort_index()
    np.testing.assert_array_equal(cube["label"].values, codes.to_numpy())


def test_worldcereal_table_labels_carry_the_legend_names(tmp_path) -> None:
    cube = open_table(LPIS_TABLE)
    legend = pd.read_csv(LEGEND, sep=";", encoding="utf-8-sig", dtype=str)
    names = dict(zip(legend["ewoc_code"].str.replace("-", "").astype(int), legend["label_full"]))
    level2 = dict(zip(legend["ewoc_code"].str.replace("-", "").astype(int), legend["level_2"].fillna("")))
    labels = cube["label"].values
    assert list(cube["label_name"].values) == [names[c] for c in labels]
    assert list(cube["level_2"].values) == [level2[c] for c in labels]
    assert {"level_3", "lon", "lat"} <= set(cube.coords)
    assert cube.sizes["time"] == 51


def small_table(path: Path, rows: list[tuple[str, str, int, int]]) -> Path:
    df = pd.DataFrame(rows, columns=["sample_id", "timestamp", "S1-SIGMA0-VV", "S1-SIGMA0-VH"])
    df["timestamp"] = pd.to_datetime(df["timestamp"])
    df[["S1-SIGMA0-VV", "S1-SIGMA0-VH"]] = df[["S1-SIGMA0-VV", "S1-SIGMA0-VH"]].astype(np.uint16)
    df.to_parquet(path)
    return path


def test_table_missing_dates_and_nodata_become_nan(tmp_path) -> None:
    path = small_table(
        tmp_path / "t.parquet",
        [
            ("b", "2023-01-01", 1000, 500),
            ("b", "2023-01-11", 65535, 500),
            ("a", "2023-01-11", 2000, 0),  # sample a has no row for 2023-01-01
        ],
    )
    cube = open_table(path)
    assert list(cube["sample"].values) == ["a", "b"]
    vv = cube["VV"].values  # (time, sample)
    assert np.isnan(vv[0, 0]) and np.isnan(vv[1, 1]) and np.isnan(cube["VH"].values[1, 0])
    np.testing.assert_allclose([vv[1, 0], vv[0, 1]], [20 * np.log10(2000) - 83, 20 * np.log10(1000) - 83], rtol=1e-6)
    assert "label" not in cube.coords


def test_table_with_a_duplicated_row_is_an_error(tmp_path) -> None:
    path = small_table(tmp_path / "t.parquet", [("a", "2023-01-01", 1000, 500), ("a", "2023-01-01", 1001, 501)])
    with pytest.raises(InputError, match=r"t\.parquet: duplicated date 2023-01-01 for sample a"):
        ingest([path], tmp_path / "c.zarr", progress=False)
    assert_no_output(tmp_path / "c.zarr")


# --- writing: completion and overwrite ----------------------------------------------------------


def test_existing_output_is_refused_without_overwrite(stack, tmp_path) -> None:
    folder, _ = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    before = tree_state(out)
    with pytest.raises(OutputError, match="already exists"):
        ingest([folder], out, chunk=CHUNK, progress=False)
    assert tree_state(out) == before


def test_overwrite_replaces_the_output(stack, tmp_path) -> None:
    folder, _ = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    ingest([folder], out, chunk=CHUNK, end=str(day(1)), overwrite=True, progress=False)
    assert xr.open_zarr(out).sizes["time"] == 2
    assert not list(tmp_path.glob("c.zarr.*"))


def test_failed_overwrite_keeps_the_previous_output(stack, tmp_path) -> None:
    folder, power = stack
    out = ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    write_tif(folder / "S1_VVVH_20300101.tif", power[0, :1], dt.date(2030, 1, 1), descriptions=("VV",))
    with pytest.raises(InputError):
        ingest([folder], out, overwrite=True, progress=False)
    assert is_complete(out) and xr.open_zarr(out).sizes["time"] == 4


def test_write_cube_leaves_the_source_dataset_unchanged(tmp_path) -> None:
    cube = make_cube(
        {"VV": np.zeros((2, 4, 4), np.float32), "VH": np.zeros((2, 4, 4), np.float32)},
        pd.date_range("2023-01-01", periods=2),
        y=np.arange(4.0)[::-1],
        x=np.arange(4.0),
        crs=32630,
        chunk=2,
    )
    before = {k: dict(v.encoding) for k, v in cube.variables.items()}, dict(cube.attrs)
    write_cube(cube, tmp_path / "c.zarr", progress=False)
    assert ({k: dict(v.encoding) for k, v in cube.variables.items()}, dict(cube.attrs)) == before


def test_a_read_failure_while_writing_leaves_no_output(stack, tmp_path) -> None:
    folder, _ = stack
    bad = sorted(folder.glob("*.tif"))[1]
    size = bad.stat().st_size
    with open(bad, "r+b") as f:  # the header stays readable; the tile data does not decode
        f.seek(size // 3)
        f.write(b"\xff" * 1500)
    with pytest.raises(InputError, match=bad.name):
        ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    assert_no_output(tmp_path / "c.zarr")


# --- bad inputs: one clear error naming the file, no output, inputs unchanged ------------------


def _duplicated_date(folder: Path) -> str:
    write_stack(folder)
    write_tif(folder / "S1_VVVH_copy.tif", power_stack(1)[0], day(2))
    return rf"duplicated date {day(2)}"


def _unparseable_date(folder: Path) -> str:
    write_stack(folder)
    write_tif(folder / "S1_VVVH_20230201.tif", power_stack(1)[0], None, acquisition_tag="first of February")
    return r"S1_VVVH_20230201\.tif: tag ACQUISITION_DATE='first of February' is not a date"


def _no_date_at_all(folder: Path) -> str:
    write_stack(folder)
    write_tif(folder / "S1_VVVH_latest.tif", power_stack(1)[0], None)
    return r"S1_VVVH_latest\.tif: no acquisition date"


def _missing_polarisation(folder: Path) -> str:
    write_stack(folder)
    write_tif(folder / "S1_VVVH_20230201.tif", power_stack(1)[0][:1], dt.date(2023, 2, 1), descriptions=("VV",))
    return r"S1_VVVH_20230201\.tif: missing polarisation VH for date 2023-02-01"


def _empty_folder(folder: Path) -> str:
    folder.mkdir()
    return r"tiffs: no GeoTIFF"


def _corrupt_file(folder: Path) -> str:
    write_stack(folder)
    (folder / "S1_VVVH_20230201.tif").write_bytes(b"this is not a TIFF" * 100)
    return r"S1_VVVH_20230201\.tif: cannot be read as a GeoTIFF"


@pytest.mark.parametrize(
    "make_bad",
    [
        _duplicated_date,
        _unparseable_date,
        _no_date_at_all,
        _missing_polarisation,
        _empty_folder,
        _corrupt_file,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_bad_geotiff_input_is_one_clear_error_and_no_output(tmp_path, make_bad) -> None:
    folder = tmp_path / "tiffs"
    pattern = make_bad(folder)
    before = tree_state(folder)
    out = tmp_path / "c.zarr"
    with pytest.raises(InputError, match=pattern) as info:
        ingest([folder], out, chunk=CHUNK, progress=False)
    assert "\n" not in str(info.value)
    assert_no_output(out)
    assert tree_state(folder) == before


def test_empty_input_list_is_an_error(tmp_path) -> None:
    with pytest.raises(InputError, match="no input given"):
        ingest([], tmp_path / "c.zarr", progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_nonexistent_path_is_an_error_naming_it(tmp_path) -> None:
    with pytest.raises(InputError, match=r"nowhere\.tif: no such file or folder"):
        ingest([tmp_path / "nowhere.tif"], tmp_path / "c.zarr", progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_corrupt_netcdf_is_an_error_naming_it(tmp_path) -> None:
    bad = tmp_path / "cube.nc"
    bad.write_bytes(b"\x89HDF garbage" * 50)
    with pytest.raises(InputError, match=r"cube\.nc: cannot be opened as a NetCDF or Zarr cube"):
        ingest([bad], tmp_path / "c.zarr", progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_netcdf_without_vh_is_a_missing_polarisation_error(tmp_path) -> None:
    ds = xr.open_dataset(OPENEO_NC)[["S1-SIGMA0-VV"]]
    ds.to_netcdf(tmp_path / "vv_only.nc")
    with pytest.raises(InputError, match=r"vv_only\.nc: missing polarisation VH"):
        ingest([tmp_path / "vv_only.nc"], tmp_path / "c.zarr", progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_mixing_kinds_of_input_is_an_error(stack, tmp_path) -> None:
    folder, _ = stack
    with pytest.raises(
        InputError, match=r"openeo_cube_utm31n_2021\.nc: several inputs can only be of kind geotiff; a cube input"
    ):
        detect_source([folder, OPENEO_NC])


def test_bad_dates_and_options_are_config_errors(stack, tmp_path) -> None:
    folder, _ = stack
    with pytest.raises(ConfigError, match="start='soon' is not a date"):
        ingest([folder], tmp_path / "c.zarr", start="soon", progress=False)
    with pytest.raises(ConfigError, match="zarr_format must be 2 or 3"):
        ingest([folder], tmp_path / "c.zarr", zarr_format=4, progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_output_inside_an_input_is_refused(stack) -> None:
    folder, _ = stack
    with pytest.raises(OutputError, match="the output lies inside the input"):
        ingest([folder], folder / "c.zarr", progress=False)
    with pytest.raises(OutputError, match="the output holds the input"):
        ingest([folder], folder.parent, overwrite=True, progress=False)


def test_dates_outside_the_input_are_an_error(stack, tmp_path) -> None:
    folder, _ = stack
    with pytest.raises(InputError, match="no date between start=2030-01-01"):
        ingest([folder], tmp_path / "c.zarr", start="2030-01-01", progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_ingest_reads_with_local_threads_under_a_distributed_client(stack, tmp_path, default_cluster) -> None:
    """Inputs are local files and GDAL settings are per process: ingest keeps to local threads."""
    folder, power = stack
    cube = xr.open_zarr(ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False))
    np.testing.assert_allclose(cube["VV"].values, expected_db(power[:, 0]), atol=1e-5, equal_nan=True)
    assert is_complete(tmp_path / "c.zarr")


# --- the command line --------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slamgeo", "ingest", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_ingests_a_folder(stack, tmp_path) -> None:
    folder, _ = stack
    out = tmp_path / "c.zarr"
    proc = run_cli(str(folder), "--out", str(out), "--chunk", str(CHUNK), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    assert xr.open_zarr(out).sizes == {"time": 4, "y": H, "x": W}


@pytest.mark.parametrize("bad", ["missing", "corrupt"])
def test_cli_bad_input_exits_nonzero_with_one_line_naming_the_file(tmp_path, bad) -> None:
    path = tmp_path / "S1_VVVH_20230101.tif"
    if bad == "corrupt":
        path.write_bytes(b"\x00garbage" * 64)
    out = tmp_path / "c.zarr"
    proc = run_cli(str(path), "--out", str(out))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and lines[0].startswith("error:")
    assert_no_output(out)


# --- integration with the synthetic generator ------------------------------------------------------


def test_synthetic_scene_ingests_back_to_its_cube_from_tiffs_and_stac(tmp_path) -> None:
    from slamgeo.synth import make_scene, write_scene

    scene = make_scene(size=96, n_dates=12, seed=1)
    paths = write_scene(scene, tmp_path / "scene")
    for source in (paths["tiffs"], paths["stac"]):
        out = ingest([source], tmp_path / f"{Path(source).stem}.zarr", chunk=32, progress=False)
        cube = xr.open_zarr(out, decode_coords="all")
        np.testing.assert_array_equal(cube["time"].values, scene.cube["time"].values)
        assert cube.rio.transform() == scene.cube.rio.transform() and cube.rio.crs == scene.cube.rio.crs
        for band in ("VV", "VH"):
            with rasterio.open(sorted(Path(paths["tiffs"]).glob("*.tif"))[3]) as src:
                written = src.read(1 if band == "VV" else 2)
            np.testing.assert_allclose(cube[band].values[3], expected_db(written), atol=1e-5, equal_nan=True)
            # float32 power -> dB loses only float32 rounding; NaN exactly where the scene has none
            np.testing.assert_allclose(cube[band].values, scene.cube[band].values, atol=1e-4, equal_nan=True)


# --- plausible backscatter: wrong encodings refused, naming the date and the encoding ------------


def write_uint16_tif(path: Path, dn: np.ndarray, date: dt.date) -> Path:
    """A GeoTIFF of uint16 values (bands VV, VH), nodata 0, dated by its tags."""
    count, h, w = dn.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=count, dtype="uint16", crs="EPSG:32630", transform=TRANSFORM, nodata=0
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn.astype(np.uint16))
        for i, d in enumerate(("VV", "VH"), start=1):
            dst.set_band_description(i, d)
        dst.update_tags(ACQUISITION_DATE=date.isoformat())
    return path


def test_a_fill_value_of_linear_power_is_refused_naming_the_date(tmp_path) -> None:
    power = power_stack()
    power[2, 0, 5:, :] = 1e38  # 3/4 of the VV pixels of the third date
    write_stack(tmp_path / "tiffs", power)
    with pytest.raises(InputError) as err:
        ingest([tmp_path / "tiffs"], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "tiffs" in msg
    assert f"implausible VV backscatter on 1 date(s) ({day(2)})" in msg
    assert "median above +100 dB" in msg and "linear power above 1e3 is not backscatter" in msg
    assert_no_output(tmp_path / "c.zarr")


def test_a_fill_value_on_a_minority_of_pixels_is_refused(tmp_path) -> None:
    power = power_stack()
    power[1, 1, :2, :] = 1e38  # 10 % of the VH pixels of the second date: the median is still fine
    write_stack(tmp_path / "tiffs", power)
    with pytest.raises(
        InputError,
        match=rf"VH backscatter on 1 date\(s\) \({day(1)}\): median -\d+\.\d dB; "
        r"linear power above 1e3 .* 10 % of the valid pixels above \+40 dB",
    ):
        ingest([tmp_path / "tiffs"], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_a_few_corner_reflectors_do_not_trigger_the_check(tmp_path) -> None:
    power = power_stack()
    power[:, 0, 10, 10:14] = 3e4  # +45 dB on 4 of 480 pixels (0.8 %), every date
    write_stack(tmp_path / "tiffs", power)
    out = ingest([tmp_path / "tiffs"], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    assert is_complete(out)
    assert float(xr.open_zarr(out)["VV"].max()) == pytest.approx(10 * np.log10(3e4), abs=1e-4)


def test_dn_scaled_by_1000_is_refused_as_such(tmp_path) -> None:
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for k, p in enumerate(power_stack()):
        write_uint16_tif(folder / f"S1_{day(k):%Y%m%d}.tif", np.clip(np.round(p * 1000), 0, None), day(k))
    with pytest.raises(InputError) as err:
        ingest([folder], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    msg = str(err.value)
    assert f"implausible VV backscatter on 4 date(s) ({day(0)}, {day(1)}, {day(2)}, {day(3)})" in msg
    assert "(expected -40 .. +5 dB)" in msg and "looks like DN scaled by 1000" in msg
    assert_no_output(tmp_path / "c.zarr")


def test_tiffs_in_db_are_refused_as_db_already(tmp_path) -> None:
    db = 10 * np.log10(np.clip(power_stack(), 1e-3, None))  # -30 .. -3 dB: every value negative
    write_stack(tmp_path / "tiffs", db)
    with pytest.raises(InputError) as err:
        ingest([tmp_path / "tiffs"], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    msg = str(err.value)
    assert f"no valid VV/VH backscatter on any of the 4 date(s) ({day(0)} .. {day(3)})" in msg
    assert "values look like dB already" in msg
    assert_no_output(tmp_path / "c.zarr")


def test_one_date_in_db_is_refused_naming_it(tmp_path) -> None:
    power = power_stack()
    power[1] = 10 * np.log10(np.clip(power[1], 1e-3, None))
    write_stack(tmp_path / "tiffs", power)
    with pytest.raises(
        InputError,
        match=rf"no valid VV pixel on 1 date\(s\) \({day(1)}\): 100 % of the input "
        "values are negative: values look like dB already",
    ):
        ingest([tmp_path / "tiffs"], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_an_all_nan_cube_is_refused(tmp_path) -> None:
    write_stack(tmp_path / "tiffs", np.zeros((3, 2, H, W), np.float32))  # 0 is the tiffs' no data
    with pytest.raises(
        InputError,
        match=r"no valid VV/VH backscatter on any of the 3 date\(s\).*no data, zero or "
        "negative",
    ):
        ingest([tmp_path / "tiffs"], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    assert_no_output(tmp_path / "c.zarr")


def test_a_date_without_valid_pixels_is_ingested_with_a_warning(tmp_path) -> None:
    from slamgeo.io.ingest import BackscatterWarning

    power = power_stack()
    power[3] = 0.0  # no data
    power[2, :, 1:, :] = 0.0  # one row of 20 left: 5 % valid, above the 1 % warning threshold
    write_stack(tmp_path / "tiffs", power)
    with pytest.warns(BackscatterWarning) as caught:
        out = ingest([tmp_path / "tiffs"], tmp_path / "c.zarr", chunk=CHUNK, progress=False)
    assert is_complete(out)
    messages = [str(w.message) for w in caught if issubclass(w.category, BackscatterWarning)]
    assert any(f"VV has no valid pixel on 1 date(s) ({day(3)})" in m for m in messages)
    assert not any(str(day(2)) in m for m in messages)


def test_check_plausible_on_a_cube_in_db() -> None:
    from slamgeo.io.ingest import check_plausible

    rng = np.random.default_rng(0)
    vv, vh = rng.normal(-10, 3, (3, H, W)), rng.normal(-18, 3, (3, H, W))

    def cube(a, b):
        return make_cube(
            {"VV": a, "VH": b},
            pd.date_range("2023-01-01", periods=3, freq="6D"),
            y=np.arange(H)[::-1] * 10.0,
            x=np.arange(W) * 10.0,
            crs=32630,
            chunk=CHUNK,
        )

    check_plausible(cube(vv, vh), where="here")  # plausible: nothing raised
    with pytest.raises(
        InputError, match=r"here: implausible VH backscatter on 3 date.*median \+1[12]\.\d dB.*DN scaled"
    ):
        check_plausible(cube(vv, vh + 30), where="here")
    with pytest.raises(InputError, match=r"implausible VV .* median -5\d\.\d dB .*far below the noise floor"):
        check_plausible(cube(vv - 40, vh), where="here")


def test_table_in_db_is_refused_naming_the_column_and_dates(tmp_path) -> None:
    df = pd.DataFrame(
        {
            "sample_id": ["a", "b", "a", "b"],
            "timestamp": pd.to_datetime(["2023-01-01"] * 2 + ["2023-01-11"] * 2),
            "VV": [-12.0, -11.0, 0.05, 0.06],
            "VH": [0.01, 0.02, 0.01, 0.02],
        }
    )
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(
        InputError,
        match=r"t\.parquet: column 'VV' is mostly negative on 1 date\(s\) \(2023-01-01\): "
        "values look like dB already",
    ):
        ingest([tmp_path / "t.parquet"], tmp_path / "c.zarr", progress=False)
    assert_no_output(tmp_path / "c.zarr")


# --- tables: bad columns are one clear error ----------------------------------------------------------


def test_table_band_column_of_strings_is_an_error_naming_the_column(tmp_path) -> None:
    df = pd.DataFrame(
        {
            "sample_id": ["a", "a"],
            "timestamp": pd.to_datetime(["2023-01-01", "2023-01-11"]),
            "S1-SIGMA0-VV": ["1000", "high"],
            "S1-SIGMA0-VH": np.array([500, 501], np.uint16),
        }
    )
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError) as err:
        open_table(tmp_path / "t.parquet")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 't.parquet'}: column 'S1-SIGMA0-VV' holds ") and "'1000'" in msg
    assert "expected numbers" in msg and "\n" not in msg


def test_table_timestamp_that_is_not_a_date_is_an_error_naming_it(tmp_path) -> None:
    df = pd.DataFrame(
        {
            "sample_id": ["a", "a", "a"],
            "timestamp": ["2023-01-01", "2023-01-11", "2023-13-45"],
            "S1-SIGMA0-VV": np.array([1000, 1001, 1002], np.uint16),
            "S1-SIGMA0-VH": np.array([500, 501, 502], np.uint16),
        }
    )
    df.to_parquet(tmp_path / "t.parquet")
    out = tmp_path / "c.zarr"
    proc = run_cli(str(tmp_path / "t.parquet"), "--out", str(out), "--no-progress")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"error: {tmp_path / 't.parquet'}: column 'timestamp': '2023-13-45' is not a date (expected YYYY-MM-DD)"
    ]
    assert_no_output(out)


# --- a synth output folder is read through its GeoTIFFs ----------------------------------------------


def test_cli_ingests_a_synth_output_folder_from_its_tiffs(tmp_path) -> None:
    scene = tmp_path / "scene"
    synth = subprocess.run(
        [sys.executable, "-m", "slamgeo", "synth", str(scene), "--size", "48", "--n-dates", "8"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert synth.returncode == 0, synth.stderr
    assert (scene / "truth.tif").exists()  # not backscatter: must not be read
    out = tmp_path / "c.zarr"
    proc = run_cli(str(scene), "--out", str(out), "--chunk", "16", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"note: {scene} is a slamgeo synth scene; reading its backscatter in {scene / 'tiffs'}" in proc.stdout
    cube = xr.open_zarr(out)
    assert cube.sizes == {"time": 8, "y": 48, "x": 48}
    assert json.loads((scene / "scene.json").read_text())["dates"] == [str(t)[:10] for t in cube["time"].values]
