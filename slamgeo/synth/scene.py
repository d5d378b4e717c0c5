"""`make_scene`: a synthetic Sentinel-1 scene in memory (a contract cube) and its ground truth,
drawn as `slamgeo.synth` describes: the dates, the parcels, their phenology, backscatter,
texture and speckle."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from scipy.ndimage import gaussian_filter

from slamgeo.errors import InputError
from slamgeo.io.cube import make_cube
from slamgeo.schema import CALENDAR_SHIFT_MAX_DAYS, CHUNK, TRAIN_MIN_DATES
from slamgeo.synth.crops import CLASSES, CONFUSABLE, DISTINCTIVE_WINDOWS, EVENTS, check_crop_mix, deal_classes
from slamgeo.synth.parcels import CRS_EPSG, ORIGIN, PIXEL_SIZE, check_size, layout, scene_transform
from slamgeo.synth.phenology import RAIN_DB, parcel_events, profiles

# The random streams of a scene, one a part of the model, spawned in this order from its seed.
_STREAMS = ("layout", "classes", "dates", "rain", "profiles", "texture", "speckle")
_TEXTURE_DB, _MARGIN_TEXTURE_DB = 0.4, 1.5


@dataclass
class Scene:
    """A synthetic scene and its ground truth.

    cube: contract cube, `VV`, `VH` float32 dB on (time, y, x), NaN outside the swath,
        EPSG:32630, y decreasing, 10 m pixels.
    parcel_id: (y, x) int32, 0 = no parcel; parcels 1..n.
    class_id: (y, x) int16, index into `CLASSES`, -1 where no parcel.
    parcels: parcel_id, crop, class_id, geometry (polygons, EPSG:32630) that rasterise back to
        `parcel_id` with `rasterio.features.rasterize(all_touched=False)`.
    phenology: one row per parcel: parcel_id, crop, class_id, the `EVENTS` (datetime64, NaT
        where the class has no such event) and `cuts` (alfalfa: ';'-separated ISO dates).
    rain_dates: the acquisition dates with a rain event (pandas Timestamps).
    info: parameters, rain rises (dB), season year, distinctive windows (dates), calendars.
    """

    cube: xr.Dataset
    parcel_id: xr.DataArray
    class_id: xr.DataArray
    parcels: gpd.GeoDataFrame
    phenology: pd.DataFrame
    rain_dates: list
    info: dict = field(default_factory=dict)


# --- dates -------------------------------------------------------------------------------


def make_dates(
    *,
    n_dates: int = 61,
    start: str = "2017-01-03",
    step_days: int = 6,
    missing_dates: int = 0,
    irregular: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Acquisition dates, datetime64[D], sorted and unique (`slamgeo.synth`, Dates)."""
    if n_dates < 1:
        raise InputError(f"n_dates must be at least 1, found {n_dates}")
    if step_days < 1:
        raise InputError(f"step_days must be at least 1 day, found {step_days}")
    if missing_dates < 0 or (missing_dates > 0 and missing_dates > n_dates - 2):
        raise InputError(
            f"missing_dates must be between 0 and n_dates - 2 = {max(n_dates - 2, 0)} "
            f"(the first and last dates are kept), found {missing_dates}"
        )
    try:
        t0 = np.datetime64(pd.Timestamp(start).date(), "D")
    except (ValueError, TypeError) as exc:
        raise InputError(f"start must be a date such as 2017-01-03, found {start!r}") from exc
    rng = rng if rng is not None else np.random.default_rng(0)
    offsets = np.arange(n_dates) * step_days
    if irregular and n_dates > 1:
        j = (step_days - 1) // 2
        shift = rng.integers(-j, j + 1, size=n_dates)
        shift[0] = 0
        offsets = offsets + shift
    dates = t0 + offsets.astype("timedelta64[D]")
    if missing_dates:
        drop = rng.choice(np.arange(1, n_dates - 1), size=missing_dates, replace=False)
        dates = np.delete(dates, drop)
    return dates


def _check_dates(dates: Sequence) -> np.ndarray:
    try:
        d = pd.to_datetime(pd.Index(list(dates))).normalize()
    except (ValueError, TypeError) as exc:
        raise InputError(f"dates: could not read {list(dates)[:3]}... as dates ({exc})") from exc
    d = d.values.astype("datetime64[D]")
    if d.size == 0:
        raise InputError("dates: the list is empty")
    if np.unique(d).size != d.size or np.any(np.diff(d) <= np.timedelta64(0, "D")):
        raise InputError(f"dates must be sorted and unique days, found {[str(v) for v in d[:8]]}...")
    return d


def check_trainable_dates(n_dates: int, missing_dates: int = 0) -> None:
    """Refuse (`InputError`, in the terms of `slamgeo synth`'s options) a scene of fewer
    dates than a model trains on: `n_dates - missing_dates` below `TRAIN_MIN_DATES`."""
    n = n_dates - max(missing_dates, 0)
    if n >= TRAIN_MIN_DATES:
        return
    given = f"--n-dates {n_dates}" + (f" with --missing-dates {missing_dates}" if missing_dates else "")
    raise InputError(
        f"{given} gives {n} date{'' if n == 1 else 's'}: too few to train a model on the scene "
        f"(at least {TRAIN_MIN_DATES}); use --n-dates {TRAIN_MIN_DATES + max(missing_dates, 0)} or more"
    )


# --- pixels ------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, parcel_id: np.ndarray) -> np.ndarray:
    """Static log-normal texture (linear factor), smooth over ~2 pixels, (ny, nx) float32."""
    noise = gaussian_filter(rng.standard_normal(parcel_id.shape), sigma=1.5, mode="reflect")
    noise /= noise.std()
    sd = np.where(parcel_id > 0, _TEXTURE_DB, _MARGIN_TEXTURE_DB)
    return (10 ** (sd * noise / 10)).astype(np.float32)


def _iso(days: np.ndarray, year0: np.datetime64) -> np.ndarray:
    out = np.full(days.shape, np.datetime64("NaT"), "datetime64[ns]")
    ok = ~np.isnan(days)
    out[ok] = (year0 + days[ok].astype(int).astype("timedelta64[D]")).astype("datetime64[ns]")
    return out


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    """One generator per random stream of the scene (`_STREAMS`), from `SeedSequence(seed)`."""
    return {k: np.random.default_rng(s) for k, s in zip(_STREAMS, np.random.SeedSequence(seed).spawn(7), strict=True)}


# --- the scene ---------------------------------------------------------------------------


def scene_classes(*, size: int = 512, seed: int = 0, crop_mix: Mapping[str, float] | None = None) -> list[str]:
    """The crop classes of the parcels of `make_scene(size=size, seed=seed, crop_mix=crop_mix)`,
    in `CLASSES` order, without drawing the scene: only its parcel layout is drawn (the same
    stream), and `make_scene` deals the n parcels the first n classes of `deal_classes`
    (round-robin by default, so the first n classes occur)."""
    check_size(size)
    polys = layout(_rngs(seed)["layout"], size, scene_transform())[0]
    present = set(deal_classes(len(polys), crop_mix).tolist())
    return [c for i, c in enumerate(CLASSES) if i in present]


def check_calendar_shift(days: float) -> float:
    """`days` as a float, refused (`InputError`) unless a whole number of days within
    +-`CALENDAR_SHIFT_MAX_DAYS`."""
    if isinstance(days, bool) or not isinstance(days, int | float | np.integer | np.floating):
        raise InputError(f"calendar_shift_days must be a whole number of days, found {days!r}")
    if not np.isfinite(days) or days != round(days) or abs(days) > CALENDAR_SHIFT_MAX_DAYS:
        raise InputError(
            f"calendar_shift_days must be a whole number of days between -{CALENDAR_SHIFT_MAX_DAYS} "
            f"and {CALENDAR_SHIFT_MAX_DAYS}, found {days!r}"
        )
    return float(days)


def make_scene(
    *,
    size: int = 512,
    seed: int = 0,
    n_dates: int = 61,
    start: str = "2017-01-03",
    step_days: int = 6,
    dates: Sequence | None = None,
    missing_dates: int = 0,
    irregular: bool = False,
    rain_events: int = 0,
    enl: float = 4.4,
    chunk: int = CHUNK,
    calendar_shift_days: float = 0,
    crop_mix: Mapping[str, float] | None = None,
) -> Scene:
    """Draw a synthetic Sentinel-1 scene of `size` x `size` 10 m pixels (see `slamgeo.synth`).

    Deterministic for a given `seed`. Memory: the cube, 8 * size^2 * n_dates bytes
    (128 MB at the defaults), plus one band of the same size while it is drawn.

    Drifts from one season to the next, with every random draw unchanged (the defaults give
    the scene drawn without them, bit for bit): `calendar_shift_days` moves every class's
    calendar (its events, alfalfa's cuts, fallow's weeds; `DISTINCTIVE_WINDOWS` with them) by
    that many whole days, later when positive; the weather (soil moisture's yearly cycle, the
    rain) stays. `crop_mix` changes the classes' shares of the parcels (`check_crop_mix`: class
    name -> weight, 1 for a class left out).
    """
    check_size(size)
    shift_days = check_calendar_shift(calendar_shift_days)
    check_crop_mix(crop_mix)
    if not enl > 0:
        raise InputError(f"enl (equivalent number of looks) must be positive, found {enl}")
    rngs = _rngs(seed)

    if dates is not None:
        if missing_dates or irregular:
            raise InputError(
                "missing_dates and irregular apply to the generated date grid; "
                "with explicit dates, pass the dates you want"
            )
        days = _check_dates(dates)
    else:
        days = make_dates(
            n_dates=n_dates,
            start=start,
            step_days=step_days,
            missing_dates=missing_dates,
            irregular=irregular,
            rng=rngs["dates"],
        )
    n_t = days.size
    if not 0 <= rain_events <= n_t:
        raise InputError(f"rain_events must be between 0 and the number of dates ({n_t}), found {rain_events}")

    polys, pid, valid, side = layout(rngs["layout"], size, scene_transform())
    n_p = len(polys)
    perm = rngs["classes"].permutation(n_p)
    cls = np.empty(n_p, np.int64)
    cls[perm] = deal_classes(n_p, crop_mix)

    middle = days[0] + (days[-1] - days[0]) // 2
    year = int(str(middle)[:4])
    year0 = np.datetime64(f"{year}-01-01", "D")
    t = (days - year0).astype(float)
    rain_idx = np.sort(rngs["rain"].choice(n_t, size=rain_events, replace=False)) if rain_events else np.array([], int)
    rain_db = np.zeros(n_t)
    rain_db[rain_idx] = rngs["rain"].uniform(*RAIN_DB, rain_idx.size)

    calendars = parcel_events(rngs["classes"], cls, calendar_shift_days=shift_days)
    prof = profiles(rngs["profiles"], t, calendars, rain_db)
    tex = _texture(rngs["texture"], pid).ravel()

    flat_pid = pid.ravel()
    invalid = ~valid.ravel()
    speckle_rng = rngs["speckle"]
    bands = {}
    for band in ("VV", "VH"):
        arr = np.ascontiguousarray(prof[band].T)[:, flat_pid]  # (T, ny * nx)
        arr *= tex[None, :]
        for k in range(n_t):
            g = speckle_rng.standard_gamma(enl, size=flat_pid.size, dtype=np.float32)
            arr[k] *= np.maximum(g, 1e-6) / np.float32(enl)
        arr[:, invalid] = np.nan
        np.log10(arr, out=arr)
        arr *= 10
        bands[band] = arr.reshape(n_t, size, size)

    x = ORIGIN[0] + (np.arange(size) + 0.5) * PIXEL_SIZE
    y = ORIGIN[1] - (np.arange(size) + 0.5) * PIXEL_SIZE
    crs = f"EPSG:{CRS_EPSG}"
    attrs = {
        "title": "slamgeo synthetic Sentinel-1 scene",
        "source": "slamgeo.synth.make_scene",
        "seed": int(seed),
        "enl": float(enl),
        "synthetic": 1,
    }
    cube = make_cube(bands, days, y=y, x=x, crs=crs, chunk=chunk, attrs=attrs)
    del bands

    class_grid = np.where(pid > 0, np.concatenate([[-1], cls])[pid], -1).astype(np.int16)
    coords = {"y": y, "x": x}
    parcel_da = xr.DataArray(
        pid.astype(np.int32),
        dims=("y", "x"),
        coords=coords,
        name="parcel_id",
        attrs={"long_name": "parcel id (0: no parcel)", "all_touched": 0},
    ).rio.write_crs(crs)
    class_da = xr.DataArray(
        class_grid,
        dims=("y", "x"),
        coords=coords,
        name="class_id",
        attrs={
            "long_name": "class id, index into slamgeo.synth.CLASSES (-1: no parcel)",
            "classes": json.dumps(CLASSES),
        },
    ).rio.write_crs(crs)
    ids = np.arange(1, n_p + 1)
    names = [CLASSES[c] for c in cls]
    parcels = gpd.GeoDataFrame({"parcel_id": ids, "crop": names, "class_id": cls.astype(int)}, geometry=polys, crs=crs)
    phen = pd.DataFrame({"parcel_id": ids, "crop": names, "class_id": cls.astype(int)})
    for e in EVENTS:
        phen[e] = _iso(calendars.events[e], year0)
    phen["cuts"] = [";".join(str(d)[:10] for d in _iso(c, year0)) for c in calendars.cuts]
    phen["n_pixels"] = np.bincount(pid.ravel(), minlength=n_p + 1)[1:]

    rain_dates = [pd.Timestamp(days[i]) for i in rain_idx]
    moved = int(shift_days)
    windows = {
        c: [str(year0 + np.timedelta64(a + moved, "D")), str(year0 + np.timedelta64(b + moved, "D"))]
        for c, (a, b) in DISTINCTIVE_WINDOWS.items()
    }
    drift: dict = {}  # recorded when set, so that a scene without drift is described as before
    if shift_days:
        drift["calendar_shift_days"] = moved
    if crop_mix:
        drift["crop_mix"] = {str(k): float(v) for k, v in crop_mix.items()}
    info = {
        "params": {
            "size": size,
            "seed": seed,
            "n_dates": int(n_t),
            "enl": enl,
            "rain_events": rain_events,
            "missing_dates": missing_dates,
            "irregular": irregular,
            "step_days": step_days,
            "start": str(days[0]),
            **drift,
        },
        "season_year": year,
        "swath_edge": side,
        "rain": {str(days[i]): float(rain_db[i]) for i in rain_idx},
        "distinctive_windows": windows,
        "confusable": list(CONFUSABLE),
        "classes": list(CLASSES),
    }
    return Scene(
        cube=cube,
        parcel_id=parcel_da,
        class_id=class_da,
        parcels=parcels,
        phenology=phen,
        rain_dates=rain_dates,
        info=info,
    )


__all__ = ["Scene", "check_calendar_shift", "check_trainable_dates", "make_dates", "make_scene", "scene_classes"]
