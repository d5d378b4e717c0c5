"""STAC conventions as data: each row of `slamgeo.io.readers.conventions.CONVENTIONS` (asset
names, units, no data) read by the one function that applies them. Items whose assets hold dB
ingest to the cube their linear-power twins give; units are not mixed within a load."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from hostile_helpers import slamgeo

from slamgeo.errors import InputError
from slamgeo.io.ingest import ingest
from slamgeo.io.readers.conventions import CONVENTIONS, match


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The items.json of a synth archive: per-polarisation COGs `vv`/`vh` of linear power in two
    UTM zones, two slices per pass, ascending and descending passes."""
    root = tmp_path_factory.mktemp("conventions")
    res = slamgeo("synth", root / "scene", "--archive", "--size", "32", "--n-dates", "8", "--seed", "1", timeout=120)
    assert res.rc == 0, res
    return root / "scene" / "archive" / "items.json"


def db_twin(items: Path, folder: Path, *, keys: dict[str, str], nodata: float, unit: str | None) -> Path:
    """A copy of the ItemCollection `items` whose rasters hold dB (`nodata` where the linear
    power is no data), under the asset `keys[pol]`, with `unit` in `raster:bands` when given
    (and the no-data value there too when it is a number). Returns its items.json."""
    folder.mkdir()
    data = json.loads(items.read_text())
    for feature in data["features"]:
        assets = {}
        for pol in ("vv", "vh"):
            asset = feature["assets"][pol]
            with rasterio.open(items.parent / asset["href"]) as src:
                power = src.read(1, masked=True)
                profile = dict(
                    driver="GTiff", width=src.width, height=src.height, count=1, dtype="float32", crs=src.crs
                )
                transform = src.transform
            valid = ~np.ma.getmaskarray(power) & (power.filled(0) > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                db = np.where(valid, 10 * np.log10(power.filled(1).astype(np.float64)), nodata).astype(np.float32)
            name = Path(asset["href"]).stem + "_db.tif"
            with rasterio.open(folder / name, "w", transform=transform, nodata=nodata, **profile) as dst:
                dst.write(db, 1)
            band: dict = {"data_type": "float32"}
            if unit is not None:
                band["unit"] = unit
            if math.isfinite(nodata):
                band["nodata"] = nodata
            assets[keys[pol]] = {"href": name, "type": asset["type"], "roles": ["data"], "raster:bands": [band]}
        feature["assets"] = assets
    (folder / "items.json").write_text(json.dumps(data))
    return folder / "items.json"


TWINS = {
    # the `db` row: assets vv_db / vh_db, no data NaN in the files' headers
    "vv_db assets": dict(keys={"vv": "vv_db", "vh": "vh_db"}, nodata=math.nan, unit=None),
    # any row: raster:bands unit dB says dB; a numeric no-data value becomes NaN
    "raster:bands unit dB": dict(keys={"vv": "VV", "vh": "VH"}, nodata=-9999.0, unit="dB"),
}


@pytest.mark.parametrize("twin", list(TWINS))
def test_assets_in_db_ingest_to_the_cube_of_their_linear_twins(archive, tmp_path, twin) -> None:
    items = db_twin(archive, tmp_path / "db", **TWINS[twin])
    # nearest: both loads pick the same source pixel (bilinear would average dB, not power)
    options = dict(chunk=16, progress=False, resampling="nearest")
    want = xr.open_zarr(ingest([archive], tmp_path / "linear.zarr", **options))
    got = xr.open_zarr(ingest([items], tmp_path / "db.zarr", **options))
    assert got.sizes == want.sizes and got.rio.transform() == want.rio.transform()
    for band in ("VV", "VH"):
        g, w = got[band].values, want[band].values
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, atol=1e-5, equal_nan=True)
        assert np.isfinite(g).mean() > 0.5


def test_items_in_db_and_in_linear_power_are_not_loaded_together(archive, tmp_path) -> None:
    twin = db_twin(archive, tmp_path / "db", **TWINS["vv_db assets"])
    linear = json.loads(archive.read_text())
    for f in linear["features"]:
        for a in f["assets"].values():
            a["href"] = str(archive.parent / a["href"])
    data = json.loads(twin.read_text())
    data["features"][1:] = linear["features"][1:]
    twin.write_text(json.dumps(data))
    first = data["features"][0]["id"]
    with pytest.raises(InputError, match=rf"is band 1 of 1 \(float32, linear\), but band 1 of 1 \(float32, dB\) in item {first}; the items must share one layout"):  # fmt: skip
        ingest([twin], tmp_path / "c.zarr", progress=False)
    assert not (tmp_path / "c.zarr").exists()


def _item(*keys: str) -> pystac.Item:
    item = pystac.Item("S1", None, None, dt.datetime(2017, 1, 3, tzinfo=dt.UTC), {})
    for k in keys:
        item.add_asset(k, pystac.Asset(f"{k}.tif"))
    return item


def test_the_rows_are_tried_in_order_and_an_item_of_none_names_them_all() -> None:
    assert match(_item("VV", "VH", "vv_db", "vh_db"), "item S1")[0].name == "linear"  # the first row that fits
    assert match(_item("vv_db", "vh_db", "backscatter"), "item S1")[0].name == "db"
    conv, pols = match(_item("Backscatter", "thumbnail"), "item S1")
    assert conv.name == "multiband" and pols == {"VV": ("Backscatter", None), "VH": ("Backscatter", None)}
    with pytest.raises(InputError, match=r"item S1: mixed polarisations: asset\(s\) \['vh_db'\] but no VV"):
        match(_item("vh_db", "backscatter"), "item S1")
    with pytest.raises(InputError) as err:
        match(_item("thumbnail"), "item S1")
    assert all(c.expected() in str(err.value) for c in CONVENTIONS), str(err.value)
