"""A synthetic Sentinel-1 scene that behaves like the real thing, with its ground truth.

`make_scene` draws a scene in memory (a contract cube plus the answer: parcels, classes and
per-parcel phenology); `write_scene` writes it the way real products arrive (one GeoTIFF per
date, a STAC ItemCollection, a GeoPackage of parcels), so the ingest stage is tested on files.
`write_archive` writes it as a Sentinel-1 archive in Planetary Computer's `sentinel-1-rtc`
conventions instead (float32 linear power COGs per asset, passes cut in two overlapping slices
in two UTM zones, a few descending passes), for the odc-stac loader; `grid_parcels` tiles the
scene with any number of rectangular parcels, for benchmarks.

The model, in the order it is drawn (every random draw comes from its own stream of
`numpy.random.SeedSequence(seed)`, so for one seed the parcels do not change with the dates,
and the speckle does not change with the rain):

Grid. UTM zone 30N (EPSG:32630), 10 m pixels, `size` x `size`, top-left corner at
(230 000 E, 4 110 000 N): the irrigated plain of the lower Guadalquivir, south of Seville.

Swath edge. The pixels on one side (east or west, drawn) of a straight line tilted 8-15 degrees
from north (a Sentinel-1 track) are no data: NaN on every date (0 in the GeoTIFFs). It covers
about 6-14 % of the width.

Parcels. The valid area (the swath, less a 15 m strip along its edge) is cut recursively, as
cadastral blocks are: first into blocks of 40-160 ha by roads 15-25 m wide at any angle, then
each block, with its own field orientation, into fields by cuts across their longest extent in
that orientation (15 to 85 % along it, N(0, 1.5) degrees of jitter) with field margins 8-12 m
wide, until a field is below a size drawn log-uniformly in 1.5-12 ha. Fields are convex polygons of about
0.5-10 ha (50-1000 pixels); those under `MIN_PARCEL_PIXELS` are dropped. The polygons are
rasterised with `rasterio.features.rasterize(all_touched=False)` (pixel centres), and the
parcel ids are numbered 1..n from north-west to south-east; 0 is no parcel (margins, roads,
the no-data border). Classes are dealt round-robin over a shuffled parcel list, so every class
has a parcel as soon as there are 16 parcels.

Phenology. Each class has a nominal calendar (`CALENDARS`, in days after 1 January of the
season year, negative for the previous autumn): tillage, sowing, emergence, peak,
senescence_start, harvest, post_tillage (autumn ploughing). A parcel shifts its whole calendar
by N(0, 6) days (clipped to +-14) and each event by N(0, 2.5) days (clipped to +-6), rounded to
whole days, the order kept. An event dated d applies to the acquisitions on or after d. The
season year is the year of the middle of the time span (2017 by default). Alfalfa is perennial:
no sowing, cuts about every 33 days from April to October (`harvest` is the first cut, `cuts`
lists them all). Fallow (spring weeds) and quinoa (a low, broad canopy; only its `peak` is
given) have no clear transition.

Biomass. A relative biomass B(t) per parcel: 0 before emergence (0.08 of residue before the
tillage), a logistic rise from emergence to the peak, a plateau, a smooth decline to `r_sen`
of the peak from senescence_start to harvest, the stubble level from the harvest on, 0 after
the post-harvest tillage. The peak value is the class's `bmax` times U(0.85, 1.1).

Backscatter, per parcel and date (the noise-free profile), a water-cloud model at 39 degrees
of incidence:  sigma0 = A B cos(theta) (1 - tau^2) + tau^2 sigma0_soil,  tau^2 =
exp(-2 b B / cos(theta)), with A_VV = 0.14, b_VV = 1.0, A_VH = 0.055, b_VH = 0.8 (each class
and parcel scales A by a gain in dB). So VH rises with biomass, from about -24 dB on bare soil
to about -14 dB for maize at its peak; VV mixes soil and canopy. Soil, in dB:
VV = -14 + roughness + moisture + parcel offset N(0, 0.7), VH = -23 + 1.2 roughness +
moisture + the same offset. Roughness: +3 dB at each tillage (an abrupt step) decaying with a
50-day time constant, halved by the seedbed rolling at sowing; root crops (sugar beet, carrot,
onion, sweet potato, potato) lift the soil at harvest: +2.5 dB decaying in 30 days. Moisture:
1.5 dB * cos(2 pi (t - 15 d) / 1 year) (wet winters, dry summers) plus 1 dB of irrigation
between sowing and harvest for irrigated crops. Profiles are clipped to -20..-5 dB (VV) and
-28..-12 dB (VH). Field margins and roads (parcel 0) get a grass-verge profile.

Confusable classes, as in the paper: cotton, sweet potato and pepper share one calendar and
one canopy. Sweet potato is lifted green around day 245 (cotton defoliates from day 255 and is
picked around day 290); pepper's canopy scatters 3 dB more within +-10 days of its peak (day
195), tapering to cotton's by +-20 days. `DISTINCTIVE_WINDOWS` gives the days of the season
year where each differs from cotton, per-parcel jitter included; outside them the three
classes are drawn from the same law.

Rain. `rain_events` dates, drawn without replacement, raise VV by U(1.5, 3) dB and VH by 0.3
times that, over the whole scene (a wet canopy and soil on the day of acquisition).

Pixels. value = profile (linear power) * texture * speckle. The texture is a static,
spatially smooth log-normal field (0.4 dB for parcels, 1.5 dB for margins and roads; shared by
VV and VH); the speckle is Gamma(shape=ENL, scale=1/ENL), independent per pixel, date and
band (the intensity of a multi-looked SAR image; ENL 4.4 for Sentinel-1 IW GRD high
resolution). The cube is the result in dB, float32. Within a parcel, mean^2 / variance of the
intensity over the parcel mean is about 4.2 for ENL 4.4 (the texture adds 0.4 dB of spread).

Dates. `n_dates` acquisitions from `start` every `step_days` days (61 from 2017-01-03 every 6
days by default). `missing_dates` drops that many acquisitions (never the first or the last);
`irregular` moves every date but the first by up to (step_days - 1) // 2 days. `dates` gives
the list explicitly instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from affine import Affine
from pydantic import Field
from rasterio.features import rasterize
from scipy.ndimage import gaussian_filter
from shapely import affinity
from shapely.geometry import Polygon, box

from slamgeo.errors import InputError
from slamgeo.io.cube import make_cube
from slamgeo.io.records import IsoDate, Record, check_record, load_json, record_json
from slamgeo.schema import CHUNK, SCENE_MARKER, TRAIN_MIN_DATES

CLASSES: tuple[str, ...] = (
    "cotton",
    "tomato",
    "sugar beet",
    "maize",
    "wheat",
    "sunflower",
    "carrot",
    "onion",
    "alfalfa",
    "sweet potato",
    "quinoa",
    "pumpkin",
    "fallow",
    "pepper",
    "potato",
    "chickpea",
)
EVENTS: tuple[str, ...] = (
    "tillage",
    "sowing",
    "emergence",
    "peak",
    "senescence_start",
    "harvest",
    "post_tillage",
)
CRS_EPSG = 32630
PIXEL_SIZE = 10.0  # m
ORIGIN = (230_000.0, 4_110_000.0)  # top-left corner (m, EPSG:32630)
MIN_PARCEL_PIXELS = 30
VV_RANGE_DB = (-20.0, -5.0)
VH_RANGE_DB = (-28.0, -12.0)
TIFF_BLOCK = 256

_NAN = math.nan


@dataclass(frozen=True)
class CropCalendar:
    """Nominal calendar (days after 1 January of the season year; NaN: no such event) and canopy.

    `kind`: "annual" (the event sequence), "cut" (perennial, cut at `cuts`), "flat" (no clear
    transition: a broad, low bump of height `bmax` and width `width` days around `peak`).
    `bmax`: relative biomass at the peak (maize 1.2); `r_sen`: fraction left at harvest after
    senescence; `stubble`: after harvest; `vv_gain_db`, `vh_gain_db`: canopy scattering gains;
    `root_crop`: harvest lifts the soil; `irrigated`: wetter soil from sowing to harvest;
    `bump_db`, `bump_halfwidth`: a brighter canopy (dB) within +-halfwidth days of the peak.
    """

    tillage: float = _NAN
    sowing: float = _NAN
    emergence: float = _NAN
    peak: float = _NAN
    senescence_start: float = _NAN
    harvest: float = _NAN
    post_tillage: float = _NAN
    kind: str = "annual"
    bmax: float = 1.0
    r_sen: float = 0.5
    stubble: float = 0.0
    vv_gain_db: float = 0.0
    vh_gain_db: float = 0.0
    root_crop: bool = False
    irrigated: bool = False
    bump_db: float = 0.0
    bump_halfwidth: float = 20.0
    cuts: tuple[float, ...] = ()
    width: float = 55.0


_COTTON: dict[str, Any] = dict(
    tillage=70, sowing=100, emergence=112, peak=195, post_tillage=325, bmax=0.85, irrigated=True
)
CALENDARS: dict[str, CropCalendar] = {
    "cotton": CropCalendar(**_COTTON, senescence_start=255, harvest=290, r_sen=0.4),
    "tomato": CropCalendar(
        tillage=80,
        sowing=110,
        emergence=116,
        peak=180,
        senescence_start=200,
        harvest=225,
        post_tillage=260,
        bmax=0.8,
        r_sen=0.7,
        stubble=0.05,
        vv_gain_db=1.0,
        irrigated=True,
    ),
    "sugar beet": CropCalendar(
        tillage=-80,
        sowing=-65,
        emergence=-50,
        peak=120,
        senescence_start=160,
        harvest=190,
        post_tillage=280,
        bmax=1.1,
        r_sen=0.7,
        vv_gain_db=1.5,
        vh_gain_db=0.5,
        root_crop=True,
        irrigated=True,
    ),
    "maize": CropCalendar(
        tillage=85,
        sowing=110,
        emergence=120,
        peak=200,
        senescence_start=230,
        harvest=262,
        post_tillage=300,
        bmax=1.2,
        r_sen=0.6,
        stubble=0.15,
        vv_gain_db=-1.0,
        vh_gain_db=0.5,
        irrigated=True,
    ),
    "wheat": CropCalendar(
        tillage=-50,
        sowing=-40,
        emergence=-25,
        peak=100,
        senescence_start=125,
        harvest=160,
        post_tillage=290,
        bmax=0.9,
        r_sen=0.5,
        stubble=0.1,
        vv_gain_db=-2.5,
    ),
    "sunflower": CropCalendar(
        tillage=30,
        sowing=55,
        emergence=68,
        peak=145,
        senescence_start=165,
        harvest=205,
        post_tillage=280,
        bmax=1.0,
        r_sen=0.55,
        stubble=0.12,
        vv_gain_db=0.5,
    ),
    "carrot": CropCalendar(
        tillage=-95,
        sowing=-80,
        emergence=-65,
        peak=55,
        harvest=110,
        post_tillage=235,
        bmax=0.7,
        vv_gain_db=0.5,
        root_crop=True,
        irrigated=True,
    ),
    "onion": CropCalendar(
        tillage=-60,
        sowing=-45,
        emergence=-30,
        peak=105,
        senescence_start=140,
        harvest=165,
        post_tillage=270,
        bmax=0.55,
        r_sen=0.6,
        root_crop=True,
        irrigated=True,
    ),
    "alfalfa": CropCalendar(
        kind="cut", bmax=0.9, cuts=(100, 133, 166, 199, 232, 265, 298), vh_gain_db=0.5, irrigated=True
    ),
    "sweet potato": CropCalendar(**_COTTON, harvest=245, root_crop=True),
    "quinoa": CropCalendar(kind="flat", peak=140, bmax=0.35, width=55.0),
    "pumpkin": CropCalendar(
        tillage=95,
        sowing=120,
        emergence=128,
        peak=185,
        senescence_start=210,
        harvest=240,
        post_tillage=290,
        bmax=0.8,
        r_sen=0.6,
        vv_gain_db=2.0,
        vh_gain_db=-0.5,
        irrigated=True,
    ),
    "fallow": CropCalendar(kind="flat", bmax=0.15, width=30.0),
    "pepper": CropCalendar(**_COTTON, senescence_start=255, harvest=290, r_sen=0.4, bump_db=3.0),
    "potato": CropCalendar(
        tillage=10,
        sowing=25,
        emergence=45,
        peak=100,
        senescence_start=125,
        harvest=150,
        post_tillage=200,
        bmax=1.0,
        r_sen=0.55,
        vv_gain_db=1.0,
        root_crop=True,
        irrigated=True,
    ),
    "chickpea": CropCalendar(
        tillage=20,
        sowing=35,
        emergence=50,
        peak=110,
        senescence_start=130,
        harvest=165,
        post_tillage=280,
        bmax=0.6,
        r_sen=0.5,
        stubble=0.08,
        vv_gain_db=-0.5,
    ),
}
# Days of the season year where a class differs from cotton (the rest is drawn from one law),
# allowing for the per-parcel jitter of up to +-20 days: pepper's brighter peak (195 +- 20
# days), sweet potato's early lifting (245) until cotton is picked (290).
DISTINCTIVE_WINDOWS: dict[str, tuple[int, int]] = {"pepper": (155, 235), "sweet potato": (225, 310)}
CONFUSABLE: tuple[str, ...] = ("cotton", "sweet potato", "pepper")

# Fallow's spring weeds peak on this day; quinoa's broad canopy at its `peak`.
_FALLOW_WEEDS_DAY = 95.0
# Water-cloud model (Attema & Ulaby 1978) at the incidence of mid-swath IW.
_COS_THETA = math.cos(math.radians(39.0))
_A = {"VV": 0.14, "VH": 0.055}
_B = {"VV": 1.0, "VH": 0.8}
_SOIL_DB = {"VV": -14.0, "VH": -23.0}
_ROUGH_VH = 1.2  # VH responds more to roughness than VV
_TILL_DB, _TILL_TAU = 3.0, 50.0
_LIFT_DB, _LIFT_TAU = 2.5, 30.0
_SOWING_SMOOTHING = 0.5
_RESIDUE = 0.08
_MOIST_DB, _IRRIG_DB = 1.5, 1.0
_MARGIN_B = 0.25
_CUT_B = 0.2  # alfalfa right after a cut
_TEXTURE_DB, _MARGIN_TEXTURE_DB = 0.4, 1.5
_RAIN_DB = (1.5, 3.0)
_RAIN_VH_FRACTION = 0.3
_MIN_GAP = {"sowing": 5, "emergence": 5, "peak": 30, "senescence_start": 5, "harvest": 7, "post_tillage": 10}


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
    """Acquisition dates, datetime64[D], sorted and unique (see the module docstring)."""
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


# --- parcels -----------------------------------------------------------------------------


def _swath(rng: np.random.Generator, width: float, height: float) -> tuple[np.ndarray, np.ndarray, str]:
    """The swath edge: a point (x, y) on it, its unit normal pointing to the no-data side
    (scene-relative metres, y up from the bottom), and the side ("east"/"west")."""
    side = "east" if rng.random() < 0.5 else "west"
    tilt = math.radians(rng.uniform(8.0, 15.0)) * (1 if rng.random() < 0.5 else -1)
    cut = rng.uniform(0.06, 0.14) * width
    x_mid = width - cut if side == "east" else cut
    point = np.array([x_mid, height / 2])
    direction = np.array([math.sin(tilt), math.cos(tilt)])  # along the track, near north
    normal = np.array([direction[1], -direction[0]])  # to the east of the line
    if side == "west":
        normal = -normal
    return point, normal, side


def _half_plane(point: np.ndarray, normal: np.ndarray, size: float) -> Polygon:
    """The valid side of the swath line, as a big polygon."""
    d = np.array([-normal[1], normal[0]])
    far = 10 * size
    p = point
    return Polygon([p + far * d, p + far * d - far * normal, p - far * d - far * normal, p - far * d])


def _split(poly: Polygon, angle: float, frac: float, gap: float) -> list[Polygon]:
    """Cut `poly` across its longest extent in the frame rotated by `angle` degrees, at `frac`
    of that extent, removing a strip `gap` metres wide (a road or field margin)."""
    c = poly.centroid
    rot = affinity.rotate(poly, -angle, origin=c)
    minx, miny, maxx, maxy = rot.bounds
    if maxx - minx >= maxy - miny:
        xc = minx + frac * (maxx - minx)
        strip = box(xc - gap / 2, miny - 1, xc + gap / 2, maxy + 1)
    else:
        yc = miny + frac * (maxy - miny)
        strip = box(minx - 1, yc - gap / 2, maxx + 1, yc + gap / 2)
    pieces = rot.difference(strip)
    geoms = list(getattr(pieces, "geoms", [pieces]))
    return [affinity.rotate(g, angle, origin=c) for g in geoms if isinstance(g, Polygon) and not g.is_empty]


def _partition(rng: np.random.Generator, region: Polygon) -> list[Polygon]:
    """Blocks separated by roads, then fields separated by margins (module docstring)."""
    blocks: list[Polygon] = []
    stack = [region]
    while stack:
        poly = stack.pop()
        if poly.area <= rng.uniform(40e4, 160e4):
            blocks.append(poly)
            continue
        mrr = poly.minimum_rotated_rectangle
        xy = np.asarray(mrr.exterior.coords)
        e = xy[1] - xy[0]
        angle = math.degrees(math.atan2(e[1], e[0])) + rng.uniform(-20, 20)
        stack.extend(_split(poly, angle, rng.uniform(0.35, 0.65), rng.uniform(15, 25)))
    fields: list[Polygon] = []
    for block in blocks:
        orientation = rng.uniform(0, 180)
        stack = [block]
        while stack:
            poly = stack.pop()
            if poly.area <= math.exp(rng.uniform(math.log(1.5e4), math.log(12e4))):
                fields.append(poly)
                continue
            angle = orientation + rng.normal(0, 1.5)
            stack.extend(_split(poly, angle, rng.uniform(0.15, 0.85), rng.uniform(8, 12)))
    return fields


def _layout(rng: np.random.Generator, size: int, transform: Affine):
    """Parcel polygons (map coordinates), parcel-id raster, swath (valid) mask and edge side."""
    extent = size * PIXEL_SIZE
    point, normal, side = _swath(rng, extent, extent)
    # Pixel centres relative to the bottom-left corner, y up.
    centres = (np.arange(size) + 0.5) * PIXEL_SIZE
    xr_, yr_ = centres[None, :], extent - centres[:, None]
    valid = ((xr_ - point[0]) * normal[0] + (yr_ - point[1]) * normal[1]) < 0
    # Fields stop 15 m short of the swath edge (pixel centres beyond it are no data); they run
    # on to the scene's own edges, cut there as a real scene cuts them.
    region = box(0, 0, extent, extent).intersection(_half_plane(point - 15.0 * normal, normal, extent))
    polys = [p for p in _partition(rng, region) if p.area > 0]
    x0, y_top = transform.c, transform.f
    polys = [affinity.translate(p, x0, y_top - extent) for p in polys]
    raster = rasterize(
        ((p, i + 1) for i, p in enumerate(polys)),
        out_shape=(size, size),
        transform=transform,
        fill=0,
        all_touched=False,
        dtype="int32",
    )
    counts = np.bincount(raster.ravel(), minlength=len(polys) + 1)[1:]
    keep = [i for i in range(len(polys)) if counts[i] >= MIN_PARCEL_PIXELS]
    # Number from north-west to south-east: the first pixel of each parcel in raster order.
    flat = raster.ravel()
    first = np.full(len(polys) + 1, flat.size)
    np.minimum.at(first, flat, np.arange(flat.size))
    keep.sort(key=lambda i: first[i + 1])
    polys = [polys[i] for i in keep]
    parcel_id = (
        rasterize(
            ((p, i + 1) for i, p in enumerate(polys)),
            out_shape=(size, size),
            transform=transform,
            fill=0,
            all_touched=False,
            dtype="int32",
        )
        if polys
        else np.zeros((size, size), np.int32)
    )
    return polys, parcel_id, valid, side


# --- phenology ---------------------------------------------------------------------------


def _class_table() -> dict[str, np.ndarray]:
    """Per-class parameters as arrays indexed by class id."""
    cals = [CALENDARS[c] for c in CLASSES]
    out = {ev: np.array([getattr(c, ev) for c in cals], float) for ev in EVENTS}
    for k in ("bmax", "r_sen", "stubble", "vv_gain_db", "vh_gain_db", "bump_db", "bump_halfwidth", "width"):
        out[k] = np.array([getattr(c, k) for c in cals], float)
    for k in ("root_crop", "irrigated"):
        out[k] = np.array([getattr(c, k) for c in cals], bool)
    out["kind"] = np.array([c.kind for c in cals])
    return out


def _parcel_events(rng: np.random.Generator, class_id: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Per-parcel event days (float, NaN where none) and alfalfa cut days (module docstring)."""
    tab = _class_table()
    n = class_id.size
    shift = np.clip(rng.normal(0, 6, n), -14, 14)
    events: dict[str, np.ndarray] = {}
    prev = np.full(n, -np.inf)
    for ev in EVENTS:
        nominal = tab[ev][class_id]
        day = np.round(nominal + shift + np.clip(rng.normal(0, 2.5, n), -6, 6))
        day = np.where(np.isnan(nominal), np.nan, np.maximum(day, prev + _MIN_GAP.get(ev, 0)))
        prev = np.where(np.isnan(day), prev, day)
        events[ev] = day
    cuts = []
    for i, c in enumerate(class_id):
        nominal = np.asarray(CALENDARS[CLASSES[c]].cuts, float)
        jit = np.round(nominal + shift[i] + np.clip(rng.normal(0, 2, nominal.size), -4, 4))
        for k in range(1, jit.size):
            jit[k] = max(jit[k], jit[k - 1] + 20)
        cuts.append(jit)
    for i, c in enumerate(class_id):
        if CALENDARS[CLASSES[c]].kind == "cut":
            events["harvest"][i] = cuts[i][0]
    return events, cuts


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _biomass(
    t: np.ndarray, ev: dict[str, np.ndarray], cuts: list[np.ndarray], class_id: np.ndarray, bmax: np.ndarray
) -> np.ndarray:
    """Relative biomass (P, T) of each parcel on the days `t` (T,) of the season year."""
    tab = _class_table()
    kind = tab["kind"][class_id]
    T = t[None, :]
    col = {k: np.nan_to_num(v, nan=1e9)[:, None] for k, v in ev.items()}
    has = {k: ~np.isnan(v)[:, None] for k, v in ev.items()}
    em, pk, hv = col["emergence"], col["peak"], col["harvest"]
    span = np.maximum(pk - em, 1.0)
    mid, s = em + 0.55 * span, span / 8

    def logistic(x):
        return 1.0 / (1.0 + np.exp(-(x - mid) / s))

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # rows without events
        rise = np.clip((logistic(T) - logistic(em)) / (logistic(pk) - logistic(em)), 0, 1)
    rise = np.where(T >= pk, 1.0, np.where(T < em, 0.0, rise))
    sen = col["senescence_start"]
    decline = 1 - (1 - tab["r_sen"][class_id][:, None]) * _smoothstep((T - sen) / np.maximum(hv - sen, 1.0))
    g = rise * np.where(has["senescence_start"], decline, 1.0)
    g = np.where(T >= hv, tab["stubble"][class_id][:, None], g)
    g = np.where(has["tillage"] & (T < col["tillage"]), _RESIDUE, g)
    g = np.where(has["post_tillage"] & (T >= col["post_tillage"]), 0.0, g)
    b = g * bmax[:, None]
    # Flat classes: a broad bump (quinoa around its peak, fallow's spring weeds), plus residue.
    flat = kind == "flat"
    if flat.any():
        centre = np.where(np.isnan(ev["peak"][flat]), _FALLOW_WEEDS_DAY, ev["peak"][flat])[:, None]
        width = tab["width"][class_id[flat]][:, None]
        b[flat] = 0.05 + bmax[flat][:, None] * np.exp(-0.5 * ((T - centre) / width) ** 2)
    # Alfalfa: winter stand, spring growth to the first cut, then cut and regrow.
    for i in np.flatnonzero(kind == "cut"):
        c = cuts[i]
        bi = 0.45 + 0.45 * _smoothstep((t - 20) / (c[0] - 20))
        for k, ck in enumerate(c):
            top = 0.9 if k + 1 < c.size else 0.6  # autumn regrowth is slower
            after = t >= ck
            bi = np.where(after, _CUT_B + (top - _CUT_B) * (1 - np.exp(-(t - ck) / 12.0)), bi)
        b[i] = bi * bmax[i] / 0.9
    return b


def _profiles(
    rng: np.random.Generator,
    t: np.ndarray,
    ev: dict[str, np.ndarray],
    cuts: list[np.ndarray],
    class_id: np.ndarray,
    rain_db: np.ndarray,
) -> dict[str, np.ndarray]:
    """Noise-free backscatter (linear power), (P + 1, T) per band; row 0: margins and roads."""
    tab = _class_table()
    n = class_id.size
    bmax = tab["bmax"][class_id] * rng.uniform(0.85, 1.1, n)
    offset = rng.normal(0, 0.7, n)
    gains = {b: tab[f"{b.lower()}_gain_db"][class_id] + rng.normal(0, 0.4, n) for b in ("VV", "VH")}
    B = _biomass(t, ev, cuts, class_id, bmax)
    T = t[None, :]
    col = {k: np.nan_to_num(v, nan=1e9)[:, None] for k, v in ev.items()}
    rough = np.zeros((n, t.size))
    for e in ("tillage", "post_tillage"):
        step = _TILL_DB * np.exp(-np.maximum(T - col[e], 0) / _TILL_TAU) * (T >= col[e])
        if e == "tillage":
            step = step * np.where(T >= col["sowing"], _SOWING_SMOOTHING, 1.0)
        rough += step
    lift = tab["root_crop"][class_id][:, None] & (T >= col["harvest"])
    rough += np.where(lift, _LIFT_DB * np.exp(-np.maximum(T - col["harvest"], 0) / _LIFT_TAU), 0.0)
    moist = _MOIST_DB * np.cos(2 * np.pi * (T - 15.0) / 365.25)
    irrig = tab["irrigated"][class_id][:, None] & (T >= col["sowing"]) & (T < col["harvest"])
    moist = moist + _IRRIG_DB * irrig
    # Pepper: a brighter canopy around its peak: flat within +-halfwidth/2, a cosine taper to
    # zero at +-halfwidth, zero outside.
    hw = tab["bump_halfwidth"][class_id][:, None]
    u = np.clip(2 * np.abs(T - col["peak"]) / hw - 1, 0, 1)
    bump = tab["bump_db"][class_id][:, None] * 0.5 * (1 + np.cos(np.pi * u))

    # Row 0: a grass verge.
    B = np.vstack([np.full((1, t.size), _MARGIN_B), B])
    rough = np.vstack([np.ones((1, t.size)), rough])
    moist = np.vstack([_MOIST_DB * np.cos(2 * np.pi * (t[None, :] - 15.0) / 365.25), moist])
    bump = np.vstack([np.zeros((1, t.size)), bump])
    offset = np.concatenate([[0.0], offset])[:, None]
    out = {}
    for band, lo_hi in (("VV", VV_RANGE_DB), ("VH", VH_RANGE_DB)):
        gain = np.concatenate([[0.0], gains[band]])[:, None]
        soil_db = _SOIL_DB[band] + (rough if band == "VV" else _ROUGH_VH * rough) + moist + offset
        tau2 = np.exp(-2 * _B[band] * B / _COS_THETA)
        veg = _A[band] * 10 ** ((gain + bump) / 10) * B * _COS_THETA * (1 - tau2)
        sigma_db = 10 * np.log10(veg + tau2 * 10 ** (soil_db / 10))
        rise = rain_db if band == "VV" else _RAIN_VH_FRACTION * rain_db
        sigma_db = np.clip(sigma_db + rise[None, :], *lo_hi)
        out[band] = (10 ** (sigma_db / 10)).astype(np.float32)
    return out


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


# --- the scene ---------------------------------------------------------------------------


def scene_classes(*, size: int = 512, seed: int = 0) -> list[str]:
    """The crop classes of the parcels of `make_scene(size=size, seed=seed)`, in `CLASSES`
    order, without drawing the scene: only its parcel layout is drawn (the same stream), and
    `make_scene` gives parcel i of n the class i mod len(CLASSES), so the first n classes occur."""
    if size < 16:
        raise InputError(f"size must be at least 16 pixels, found {size}")
    layout_stream = np.random.SeedSequence(seed).spawn(7)[0]  # make_scene's "layout" stream
    transform = Affine(PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1])
    polys = _layout(np.random.default_rng(layout_stream), size, transform)[0]
    return list(CLASSES[: min(len(polys), len(CLASSES))])


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
) -> Scene:
    """Draw a synthetic Sentinel-1 scene of `size` x `size` 10 m pixels (see the module docstring).

    Deterministic for a given `seed`. Memory: the cube, 8 * size^2 * n_dates bytes
    (128 MB at the defaults), plus one band of the same size while it is drawn.
    """
    if size < 16:
        raise InputError(f"size must be at least 16 pixels, found {size}")
    if not enl > 0:
        raise InputError(f"enl (equivalent number of looks) must be positive, found {enl}")
    streams = dict(
        zip(
            ("layout", "classes", "dates", "rain", "profiles", "texture", "speckle"),
            np.random.SeedSequence(seed).spawn(7),
        )
    )
    rngs = {k: np.random.default_rng(s) for k, s in streams.items()}

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

    transform = Affine(PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1])
    polys, pid, valid, side = _layout(rngs["layout"], size, transform)
    n_p = len(polys)
    perm = rngs["classes"].permutation(n_p)
    cls = np.empty(n_p, np.int64)
    cls[perm] = np.arange(n_p) % len(CLASSES)

    middle = days[0] + (days[-1] - days[0]) // 2
    year = int(str(middle)[:4])
    year0 = np.datetime64(f"{year}-01-01", "D")
    t = (days - year0).astype(float)
    rain_idx = np.sort(rngs["rain"].choice(n_t, size=rain_events, replace=False)) if rain_events else np.array([], int)
    rain_db = np.zeros(n_t)
    rain_db[rain_idx] = rngs["rain"].uniform(*_RAIN_DB, rain_idx.size)

    ev, cuts = _parcel_events(rngs["classes"], cls)
    prof = _profiles(rngs["profiles"], t, ev, cuts, cls, rain_db)
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
        "source": "slamgeo.io.synth.make_scene",
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
            "long_name": "class id, index into slamgeo.io.synth.CLASSES (-1: no parcel)",
            "classes": json.dumps(CLASSES),
        },
    ).rio.write_crs(crs)
    ids = np.arange(1, n_p + 1)
    names = [CLASSES[c] for c in cls]
    parcels = gpd.GeoDataFrame({"parcel_id": ids, "crop": names, "class_id": cls.astype(int)}, geometry=polys, crs=crs)
    phen = pd.DataFrame({"parcel_id": ids, "crop": names, "class_id": cls.astype(int)})
    for e in EVENTS:
        phen[e] = _iso(ev[e], year0)
    phen["cuts"] = [";".join(str(d)[:10] for d in _iso(c, year0)) for c in cuts]
    phen["n_pixels"] = np.bincount(pid.ravel(), minlength=n_p + 1)[1:]

    rain_dates = [pd.Timestamp(days[i]) for i in rain_idx]
    windows = {
        c: [str(year0 + np.timedelta64(a, "D")), str(year0 + np.timedelta64(b, "D"))]
        for c, (a, b) in DISTINCTIVE_WINDOWS.items()
    }
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


# --- writing -----------------------------------------------------------------------------


def _tif_name(day: np.datetime64) -> str:
    return f"S1_VVVH_{str(day)[:10].replace('-', '')}.tif"


def _write_tiffs(scene: Scene, folder: Path) -> list[Path]:
    import rasterio

    cube = scene.cube
    transform = cube.rio.transform()
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    profile = dict(
        driver="GTiff",
        width=nx,
        height=ny,
        count=2,
        dtype="float32",
        crs=f"EPSG:{CRS_EPSG}",
        transform=transform,
        nodata=0.0,
        tiled=True,
        blockxsize=TIFF_BLOCK,
        blockysize=TIFF_BLOCK,
        compress="deflate",
        predictor=3,
        zlevel=1,
    )
    folder.mkdir()
    paths = []
    for k, day in enumerate(cube["time"].values.astype("datetime64[D]")):
        path = folder / _tif_name(day)
        iso = str(day)
        with rasterio.open(path, "w", **profile) as dst:
            for b, band in enumerate(("VV", "VH"), start=1):
                db = np.asarray(cube[band].isel(time=k).values, np.float64)
                lin = np.where(np.isnan(db), 0.0, 10 ** (db / 10)).astype(np.float32)
                dst.write(lin, b)
                dst.set_band_description(b, band)
                dst.update_tags(b, POLARIZATION=band, UNITS="linear power (sigma0)")
            dst.update_tags(
                ACQUISITION_DATE=iso,
                TIFFTAG_DATETIME=iso.replace("-", ":") + " 00:00:00",
                MISSION="Sentinel-1 (synthetic, slamgeo)",
                RAIN_EVENT=str(pd.Timestamp(day) in scene.rain_dates),
            )
        paths.append(path)
    return paths


def _write_truth(scene: Scene, path: Path) -> None:
    import rasterio

    pid = scene.parcel_id.values.astype(np.int32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=pid.shape[1],
        height=pid.shape[0],
        count=2,
        dtype="int32",
        crs=f"EPSG:{CRS_EPSG}",
        transform=scene.cube.rio.transform(),
        tiled=True,
        blockxsize=TIFF_BLOCK,
        blockysize=TIFF_BLOCK,
        compress="deflate",
    ) as dst:
        dst.write(pid, 1)
        dst.write(scene.class_id.values.astype(np.int32), 2)
        dst.set_band_description(1, "parcel_id")
        dst.set_band_description(2, "class_id")
        dst.update_tags(CLASSES=json.dumps(CLASSES), NO_PARCEL="parcel_id 0, class_id -1", ALL_TOUCHED="FALSE")


def _footprint_wgs84(valid: np.ndarray, transform: Affine, epsg: int) -> Any:
    """The footprint of the valid pixels of a north-up grid, in WGS84: the convex hull (the
    swath cut is convex) of the corners of the first and last valid pixel of each row, densified
    every 500 m before it is transformed; the raster's bounds when no pixel is valid."""
    from pyproj import Transformer

    ny, nx = valid.shape
    rows = np.flatnonzero(valid.any(axis=1))
    if rows.size:
        first = valid[rows].argmax(axis=1)
        last = nx - 1 - valid[rows, ::-1].argmax(axis=1)
        cols = np.concatenate([first, first, last + 1, last + 1])
        rr = np.concatenate([rows, rows + 1] * 2)
        xs, ys = transform.c + cols * transform.a, transform.f + rr * transform.e  # north-up grid
        hull = shapely.MultiPoint(np.column_stack([xs, ys])).convex_hull
    else:
        x0, y0 = transform.c, transform.f
        hull = box(x0, y0 + ny * transform.e, x0 + nx * transform.a, y0)
    hull = shapely.segmentize(hull, 500.0)
    to_wgs = Transformer.from_crs(epsg, 4326, always_xy=True)
    return shapely.transform(hull, lambda a: np.column_stack(to_wgs.transform(a[:, 0], a[:, 1])))


def _write_stac(scene: Scene, tiffs: list[Path], path: Path) -> None:
    import pystac
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.sar import FrequencyBand, Polarization, SarExtension

    cube = scene.cube
    transform = cube.rio.transform()
    valid = ~np.isnan(cube["VV"].isel(time=0).values)
    ny, nx = valid.shape
    geom = _footprint_wgs84(valid, transform, CRS_EPSG)
    items = []
    for k, tif in enumerate(tiffs):
        day = pd.Timestamp(cube["time"].values[k])
        item = pystac.Item(
            id=tif.stem,
            geometry=shapely.geometry.mapping(geom),
            bbox=list(geom.bounds),
            datetime=day.tz_localize("UTC").to_pydatetime(),
            properties={
                "constellation": "sentinel-1",
                "slamgeo:synthetic": True,
                "slamgeo:rain_event": day in scene.rain_dates,
            },
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.apply(epsg=CRS_EPSG, shape=[ny, nx], transform=list(transform)[:6], bbox=list(cube.rio.bounds()))
        sar = SarExtension.ext(item, add_if_missing=True)
        sar.apply(
            instrument_mode="IW",
            frequency_band=FrequencyBand.C,
            polarizations=[Polarization.VV, Polarization.VH],
            product_type="GRD",
            looks_equivalent_number=float(scene.cube.attrs.get("enl", 4.4)),
        )
        item.add_asset(
            "backscatter",
            pystac.Asset(
                href=f"{tif.parent.name}/{tif.name}",
                media_type="image/tiff; application=geotiff",
                roles=["data"],
                title="VV, VH backscatter (linear power, float32, nodata 0)",
            ),
        )
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(path))


SCENE_FILES = {
    "tiffs": "tiffs",
    "stac": "stac.json",
    "parcels": "parcels.gpkg",
    "phenology": "phenology.csv",
    "truth": "truth.tif",
    "meta": SCENE_MARKER,
}


ARCHIVE_DIR = "archive"
ARCHIVE_FILES = {
    "archive": ARCHIVE_DIR,
    "items": f"{ARCHIVE_DIR}/items.json",
    "collection": f"{ARCHIVE_DIR}/collection.json",
    "cogs": f"{ARCHIVE_DIR}/cogs",
    "parcels": "parcels.gpkg",
    "phenology": "phenology.csv",
    "truth": "truth.tif",
    "meta": SCENE_MARKER,
}
GRID_PARCELS_FILE = "parcels_grid.gpkg"


class SceneParams(Record):
    """`params` of scene.json: the arguments of `make_scene`."""

    size: int
    seed: int
    n_dates: int
    enl: float | None = None
    rain_events: int | None = None
    missing_dates: int | None = None
    irregular: bool | None = None
    step_days: int | None = None
    start: IsoDate | None = None


class SceneMeta(Record):
    """The shape of `scene.json`, checked when it is written and when it is read back
    (`read_scene_meta`). Dates are ISO strings; fields not listed here are kept."""

    params: SceneParams
    dates: list[IsoDate]
    rain_dates: list[IsoDate] = []
    season_year: int | None = None
    swath_edge: str | None = None
    rain: dict[str, float] = {}
    distinctive_windows: dict[str, Annotated[list[IsoDate], Field(min_length=2, max_length=2)]] = {}
    confusable: list[str] = []
    classes: list[str] = []
    calendars: dict[str, dict[str, Any]] = {}
    archive: bool = False
    archive_layout: dict[str, Any] | None = None


SCENE_ADVICE = "; write the scene again (slamgeo synth --overwrite)"


def read_scene_meta(folder: str | Path, *, advice: str = SCENE_ADVICE) -> SceneMeta:
    """The `scene.json` of a scene folder (a local folder or a URL), checked against
    `SceneMeta`; raises `InputError` naming the file and the field (with `advice` appended),
    FileNotFoundError when there is none."""
    from slamgeo.io import storage

    path = storage.join(storage.location(folder), SCENE_MARKER)
    data = load_json(storage.read_bytes(path), path, advice=advice)
    return check_record(data, SceneMeta, path, advice=advice)


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


def _write_ground_truth(scene: Scene, folder: Path, meta: dict[str, Any]) -> None:
    """truth.tif, parcels.gpkg, phenology.csv and scene.json (with `meta` added) in `folder`."""
    _write_truth(scene, folder / "truth.tif")
    scene.parcels.to_file(folder / "parcels.gpkg", layer="parcels", driver="GPKG")
    phen = scene.phenology.copy()
    for e in EVENTS:
        phen[e] = phen[e].dt.strftime("%Y-%m-%d")
    phen.to_csv(folder / "phenology.csv", index=False)
    (folder / SCENE_MARKER).write_text(
        record_json(  # checked against its schema, `SceneMeta`
            {
                **scene.info,
                **meta,
                "dates": [str(d)[:10] for d in scene.cube["time"].values],
                "rain_dates": [str(d.date()) for d in scene.rain_dates],
                "calendars": {
                    c: {
                        k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in vars(CALENDARS[c]).items()
                    }
                    for c in CLASSES
                },
            },
            SceneMeta,
            indent=1,
        )
    )


def _write_folder(
    out_dir: Path | str, fill: Callable[[Path], None], files: dict[str, str], *, overwrite: bool
) -> dict[str, Path | str]:
    """Run `fill` on a new, empty folder and put it at `out_dir` atomically (`write_scene`)."""
    from slamgeo.io import storage

    kind = storage.SCENE  # its entries include the archive/ folder of write_archive
    storage.claim_output(out_dir, kind, overwrite=overwrite)
    with storage.staged_folder(out_dir, kind) as staged:  # stamped first, published at the end
        fill(staged)
    if not storage.is_local(out_dir):
        return {k: storage.join(out_dir, v) for k, v in files.items()}
    out = Path(storage.filesystem(out_dir)[1])
    return {k: out / v for k, v in files.items()}


def _check_grid_parcels(n: int) -> None:
    if n < 0:
        raise InputError(f"the number of grid parcels must be 0 (none) or more, found {n}")


def grid_parcels(
    scene: Scene | tuple[Affine, int] | tuple[Affine, tuple[int, int]], n: int, *, margin: float = 0.1
) -> gpd.GeoDataFrame:
    """`n` rectangular parcels tiling the scene, for benchmarks with many parcels.

    `scene`: a `Scene`, or (transform, size) or (transform, (height, width)) of a north-up grid
    in EPSG:32630. The grid has round(sqrt(n)) rows of cells (nearly square), the `n` cells
    dealt over them as evenly as possible, each row split into equal cells; each cell shrunk
    by `margin` times its shorter side on every side. Columns: parcel_id (1..n, from north-west
    to south-east, row by row), crop and class_id: the class of the scene parcel under the cell's
    centre, or of the nearest parcel pixel when the centre is on no parcel (round-robin over
    `CLASSES` without a Scene, or when it has no parcel); geometry, in EPSG:32630.
    """
    from scipy.ndimage import distance_transform_edt

    if isinstance(scene, Scene):
        transform = scene.cube.rio.transform()
        ny, nx = scene.parcel_id.shape
        class_grid: np.ndarray | None = scene.class_id.values
    else:
        transform, shape = scene
        ny, nx = (shape, shape) if isinstance(shape, int | np.integer) else (int(shape[0]), int(shape[1]))
        class_grid = None
    if int(n) != n or n < 1:
        raise InputError(f"the number of grid parcels must be a positive integer, found {n}")
    if not 0 <= margin < 0.5:
        raise InputError(f"margin must be in [0, 0.5) of a cell's side, found {margin}")
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise InputError(f"grid_parcels needs a north-up grid, found the transform {tuple(transform)[:6]}")
    n = int(n)
    width, height = nx * transform.a, ny * -transform.e
    n_rows = int(min(n, max(1, round(math.sqrt(n * height / width)))))
    per_row = np.full(n_rows, n // n_rows)
    per_row[: n % n_rows] += 1
    row = np.repeat(np.arange(n_rows), per_row)
    col = np.arange(n) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    cw, ch = width / per_row[row], height / n_rows
    x0 = transform.c + col * cw
    y1 = transform.f - row * ch
    m = margin * np.minimum(cw, ch)
    geoms = shapely.box(x0 + m, y1 - ch + m, x0 + cw - m, y1 - m)
    labelled = class_grid is not None and bool((class_grid >= 0).any())
    if class_grid is not None and labelled:
        idx = distance_transform_edt(class_grid < 0, return_distances=False, return_indices=True)
        nearest = class_grid[tuple(idx)]
        r = np.clip(((y1 - ch / 2 - transform.f) / transform.e).astype(int), 0, ny - 1)
        c = np.clip(((x0 + cw / 2 - transform.c) / transform.a).astype(int), 0, nx - 1)
        cls = nearest[r, c].astype(int)
    else:
        cls = np.arange(n) % len(CLASSES)
    return gpd.GeoDataFrame(
        {"parcel_id": np.arange(1, n + 1), "crop": np.asarray(CLASSES)[cls], "class_id": cls},
        geometry=geoms,
        crs=f"EPSG:{CRS_EPSG}",
    )


def write_grid_parcels(parcels: gpd.GeoDataFrame, path: Path | str) -> Path:
    """Write `grid_parcels` output as a GeoPackage (layer "parcels"), with pyogrio and Arrow."""
    path = Path(path)
    parcels.to_file(path, layer="parcels", driver="GPKG", engine="pyogrio", use_arrow=True)
    return path


def _in_memory(scene: Scene) -> Scene:
    """`scene` with its cube computed here, once: a Dask array built from NumPy holds its data in
    its graph, so computing it date by date under a distributed client would ship the whole
    scene to the scheduler with every date ("Sending large graph")."""
    return dataclasses.replace(scene, cube=scene.cube.compute(scheduler="sync"))


def write_scene(
    scene: Scene, out_dir: Path | str, *, overwrite: bool = False, n_grid_parcels: int = 0
) -> dict[str, Path | str]:
    """Write `scene` as real products are delivered, atomically (module docstring).

    `out_dir/tiffs/S1_VVVH_YYYYMMDD.tif` (bands VV, VH, linear power float32, nodata 0),
    `stac.json` (ItemCollection, relative asset hrefs), `parcels.gpkg` (layer "parcels"),
    `phenology.csv`, `truth.tif` (bands parcel_id, class_id) and `scene.json` (parameters,
    rain, distinctive windows); with `n_grid_parcels` > 0, also `parcels_grid.gpkg` (layer
    "parcels", `grid_parcels(scene, n_grid_parcels)`). Everything is written to a hidden sibling folder that
    is renamed to `out_dir` at the end. An existing `out_dir` must be empty or, with
    `overwrite`, a scene folder holding nothing else (`slamgeo.io.storage.claim_output`); it is
    replaced only once the new one is complete. Returns the paths by kind.

    `out_dir` may be an fsspec URL (`s3://bucket/scene`): the scene is written locally, then
    uploaded with `scene.json` last (`slamgeo.io.storage.staged_folder`); the URLs are returned.
    """
    _check_grid_parcels(n_grid_parcels)
    scene = _in_memory(scene)

    def fill(folder: Path) -> None:
        tiffs = _write_tiffs(scene, folder / "tiffs")
        _write_ground_truth(scene, folder, {})
        if n_grid_parcels:
            write_grid_parcels(grid_parcels(scene, n_grid_parcels), folder / GRID_PARCELS_FILE)
        _write_stac(scene, tiffs, folder / "stac.json")

    files = {**SCENE_FILES, **({"parcels_grid": GRID_PARCELS_FILE} if n_grid_parcels else {})}
    return _write_folder(out_dir, fill, files, overwrite=overwrite)


# --- a Sentinel-1 archive in Planetary Computer's sentinel-1-rtc conventions ---------------
#
# Every date is one ascending pass of two overlapping slices (north on the scene's grid, south
# reprojected into UTM 29N), and every 5th date (the 1st, 6th, 11th ...) also a descending pass
# the next evening, brighter by a viewing-geometry offset; see `write_archive`.

ARCHIVE_COLLECTION = "sentinel-1-rtc"
ARCHIVE_LICENSE = "CC-BY-4.0"
ARCHIVE_NODATA = -32768
ARCHIVE_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
ARCHIVE_PLATFORM = "sentinel-1a"
ARCHIVE_ID_PREFIX = "S1A_IW_GRDH_1SDV_"
SOUTH_EPSG = 32629  # UTM zone 29N: the scene lies just east of 6 degrees W
ASCENDING_TIME = pd.Timedelta(hours=6, minutes=15)  # north slice; the south one 25 s later
SOUTH_DELAY = pd.Timedelta(seconds=25)
ASCENDING_ORBIT = 74
DESCENDING_TIME = pd.Timedelta(days=1, hours=18, minutes=5)  # after the scene date
DESCENDING_ORBIT = 147
DESCENDING_EVERY = 5  # dates 0, 5, 10 ... of the scene
DESCENDING_OFFSET_DB = {"VV": 1.5, "VH": 1.0}


def archive_slices(size: int) -> dict[str, tuple[int, int]]:
    """Scene rows [start, stop) of the north ("N") and south ("S") slices of an ascending pass:
    the rows r < 0.6 size and the rows r >= 0.4 size."""
    return {"N": (0, -(-6 * size // 10)), "S": (-(-4 * size // 10), size)}


@dataclass(frozen=True)
class _Grid:
    rows: tuple[int, int]  # scene rows it covers
    epsg: int
    transform: Affine
    shape: tuple[int, int]


def _archive_grids(scene: Scene) -> dict[str, _Grid]:
    """The grids of the north, south and descending ("D", the whole scene) slices."""
    from rasterio.warp import aligned_target, calculate_default_transform

    t = scene.cube.rio.transform()
    ny, nx = scene.parcel_id.shape
    grids = {}
    for key, (r0, r1) in archive_slices(ny).items():
        src = t * Affine.translation(0, r0)
        if key == "N":
            grids[key] = _Grid((r0, r1), CRS_EPSG, src, (r1 - r0, nx))
            continue
        bounds = (src.c, src.f + (r1 - r0) * src.e, src.c + nx * src.a, src.f)
        dst, w, h = calculate_default_transform(
            f"EPSG:{CRS_EPSG}", f"EPSG:{SOUTH_EPSG}", nx, r1 - r0, *bounds, resolution=PIXEL_SIZE
        )
        dst, w, h = aligned_target(dst, w, h, PIXEL_SIZE)  # on the 10 m lattice of the zone
        grids[key] = _Grid((r0, r1), SOUTH_EPSG, dst, (int(h), int(w)))
    grids["D"] = _Grid((0, ny), CRS_EPSG, t, (ny, nx))
    return grids


def _slice_power(db: np.ndarray, scene_transform: Affine, grid: _Grid, offset_db: float = 0.0) -> np.ndarray:
    """Linear power (float32, NaN: no data) of the scene's dB image `db` (y, x) on `grid`:
    the rows it covers, reprojected (bilinear, on linear power) when it is in another zone."""
    from rasterio.warp import Resampling, reproject

    r0, r1 = grid.rows
    lin = (10 ** ((db[r0:r1].astype(np.float64) + offset_db) / 10)).astype(np.float32)
    if grid.epsg == CRS_EPSG:
        return lin
    out = np.full(grid.shape, np.nan, np.float32)
    reproject(
        lin,
        out,
        src_transform=scene_transform * Affine.translation(0, r0),
        src_crs=f"EPSG:{CRS_EPSG}",
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=f"EPSG:{grid.epsg}",
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    return out


def _write_cog(path: Path, power: np.ndarray, grid: _Grid, band: str, tags: dict[str, str]) -> None:
    """One band of linear power as a float32 Cloud Optimized GeoTIFF, nodata -32768."""
    import rasterio

    data = np.where(np.isnan(power), np.float32(ARCHIVE_NODATA), power).astype(np.float32)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=grid.shape[1],
        height=grid.shape[0],
        count=1,
        dtype="float32",
        crs=f"EPSG:{grid.epsg}",
        transform=grid.transform,
        nodata=ARCHIVE_NODATA,
        blocksize=TIFF_BLOCK,
        compress="deflate",
        predictor="yes",
        overview_resampling="average",
    ) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, band)
        dst.update_tags(1, POLARIZATION=band, UNITS="linear power (sigma0)")
        dst.update_tags(**tags)


def _archive_extensions() -> list[str]:
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension
    from pystac.extensions.sar import SarExtension
    from pystac.extensions.sat import SatExtension

    return [e.get_schema_uri() for e in (ProjectionExtension, SarExtension, SatExtension, RasterExtension)]


def _raster_bands() -> list[dict[str, Any]]:
    return [{"nodata": ARCHIVE_NODATA, "data_type": "float32"}]


def _archive_item(
    key: str, when: pd.Timestamp, grid: _Grid, footprint: Any, orbit: tuple[str, int], extra: dict[str, Any]
) -> Any:
    import pystac

    item_id = f"{ARCHIVE_ID_PREFIX}{when:%Y%m%dT%H%M%S}_{key}"
    h, w = grid.shape
    t = grid.transform
    item = pystac.Item(
        id=item_id,
        geometry=shapely.geometry.mapping(footprint),
        bbox=list(footprint.bounds),
        datetime=when.to_pydatetime(),
        properties={
            "platform": ARCHIVE_PLATFORM,
            "constellation": "sentinel-1",
            "sar:instrument_mode": "IW",
            "sar:polarizations": ["VV", "VH"],
            "sar:frequency_band": "C",
            "sar:product_type": "GRD",
            "sat:orbit_state": orbit[0],
            "sat:relative_orbit": orbit[1],
            "proj:code": f"EPSG:{grid.epsg}",
            "proj:epsg": grid.epsg,
            "proj:shape": [h, w],
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "proj:bbox": [t.c, t.f + h * t.e, t.c + w * t.a, t.f],
            "slamgeo:synthetic": True,
            **extra,
        },
        stac_extensions=_archive_extensions(),
        collection=ARCHIVE_COLLECTION,
    )
    for rel in ("collection", "parent", "root"):
        item.add_link(pystac.Link(rel, "./collection.json", media_type=pystac.MediaType.JSON))
    for pol in ("vv", "vh"):
        item.add_asset(
            pol,
            pystac.Asset(
                href=f"cogs/{item_id}_{pol}.tif",
                media_type=ARCHIVE_MEDIA_TYPE,
                roles=["data"],
                title=f"{pol.upper()}: linear power (sigma0), float32, nodata {ARCHIVE_NODATA}",
                extra_fields={"raster:bands": _raster_bands()},
            ),
        )
    return item


def _archive_collection(items: list[Any]) -> Any:
    import pystac

    bb = np.array([it.bbox for it in items])
    times = sorted(it.datetime for it in items)
    collection = pystac.Collection(
        id=ARCHIVE_COLLECTION,
        title="Sentinel-1 Radiometrically Terrain Corrected (synthetic, slamgeo)",
        description=(
            "A synthetic Sentinel-1 IW archive written by slamgeo.io.synth.write_archive in the "
            "conventions of Planetary Computer's sentinel-1-rtc collection: float32 linear power "
            "COGs (assets vv, vh; nodata -32768), passes in two slices over two UTM zones."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent(
                [[float(bb[:, 0].min()), float(bb[:, 1].min()), float(bb[:, 2].max()), float(bb[:, 3].max())]]
            ),
            pystac.TemporalExtent([[times[0], times[-1]]]),
        ),
        license=ARCHIVE_LICENSE,
        keywords=["Sentinel-1", "SAR", "RTC", "synthetic"],
        providers=[
            pystac.Provider(
                name="slamgeo (synthetic)",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.HOST],
                description="slamgeo.io.synth.make_scene and write_archive",
            )
        ],
        summaries=pystac.Summaries(
            {
                "platform": [ARCHIVE_PLATFORM],
                "constellation": ["sentinel-1"],
                "sar:instrument_mode": ["IW"],
                "sar:polarizations": ["VV", "VH"],
                "sat:orbit_state": ["ascending", "descending"],
                "sat:relative_orbit": [ASCENDING_ORBIT, DESCENDING_ORBIT],
                "proj:code": [f"EPSG:{SOUTH_EPSG}", f"EPSG:{CRS_EPSG}"],
            }
        ),
        stac_extensions=_archive_extensions(),
    )
    collection.extra_fields["item_assets"] = {
        pol: {
            "type": ARCHIVE_MEDIA_TYPE,
            "roles": ["data"],
            "title": f"{pol.upper()}: linear power (sigma0)",
            "raster:bands": _raster_bands(),
        }
        for pol in ("vv", "vh")
    }
    collection.clear_links()
    collection.add_link(pystac.Link("root", "./collection.json", media_type=pystac.MediaType.JSON))
    return collection


def _write_archive_stac(scene: Scene, folder: Path) -> dict[str, Any]:
    """The COGs, items.json and collection.json of `write_archive` in `folder`; returns the
    layout recorded in scene.json."""
    import pystac

    cube = scene.cube
    transform = cube.rio.transform()
    grids = _archive_grids(scene)
    cogs = folder / "cogs"
    cogs.mkdir(parents=True)
    first = np.asarray(cube["VV"].isel(time=0).values)
    footprints = {
        k: _footprint_wgs84(~np.isnan(_slice_power(first, transform, g)), g.transform, g.epsg) for k, g in grids.items()
    }
    items = []
    for k, day in enumerate(cube["time"].values):
        date = pd.Timestamp(day).normalize().tz_localize("UTC")
        db = {b: np.asarray(cube[b].isel(time=k).values) for b in ("VV", "VH")}
        common = {"slamgeo:scene_date": str(date.date()), "slamgeo:rain_event": pd.Timestamp(day) in scene.rain_dates}
        passes = [("N", date + ASCENDING_TIME, ("ascending", ASCENDING_ORBIT), 0.0)]
        passes.append(("S", date + ASCENDING_TIME + SOUTH_DELAY, ("ascending", ASCENDING_ORBIT), 0.0))
        if k % DESCENDING_EVERY == 0:
            passes.append(("D", date + DESCENDING_TIME, ("descending", DESCENDING_ORBIT), 1.0))
        for key, when, orbit, geometry in passes:
            grid = grids[key]
            item = _archive_item(key, when, grid, footprints[key], orbit, {**common, "slamgeo:slice": key})
            for b, pol in (("VV", "vv"), ("VH", "vh")):
                power = _slice_power(db[b], transform, grid, geometry * DESCENDING_OFFSET_DB[b])
                _write_cog(
                    folder / item.assets[pol].href,
                    power,
                    grid,
                    b,
                    {"ACQUISITION_DATETIME": when.isoformat(), "MISSION": "Sentinel-1 (synthetic, slamgeo)"},
                )
            items.append(item)
    items.sort(key=lambda it: (it.datetime, it.id))
    pystac.ItemCollection(items).save_object(dest_href=str(folder / "items.json"))
    collection = _archive_collection(items)
    (folder / "collection.json").write_text(
        json.dumps(collection.to_dict(include_self_link=False, transform_hrefs=False), indent=1)
    )
    return {
        "collection": ARCHIVE_COLLECTION,
        "items": len(items),
        "slices": {
            k: {"rows": list(g.rows), "epsg": g.epsg, "shape": list(g.shape), "transform": list(g.transform)[:6]}
            for k, g in grids.items()
        },
        "ascending": {
            "time": "06:15:00Z (N), 06:15:25Z (S)",
            "relative_orbit": ASCENDING_ORBIT,
        },
        "descending": {
            "every": DESCENDING_EVERY,
            "time": "next day 18:05:00Z",
            "relative_orbit": DESCENDING_ORBIT,
            "offset_db": DESCENDING_OFFSET_DB,
        },
        "nodata": ARCHIVE_NODATA,
    }


def write_archive(
    scene: Scene, out_dir: Path | str, *, overwrite: bool = False, n_grid_parcels: int = 0
) -> dict[str, Path | str]:
    """Write `scene` as a Sentinel-1 archive in Planetary Computer's `sentinel-1-rtc`
    conventions, atomically and with the ownership rules of `write_scene`.

    `out_dir/` holds the ground truth of `write_scene` (scene.json, with `"archive": true` and
    the layout under `"archive_layout"`; parcels.gpkg; phenology.csv; truth.tif; with
    `n_grid_parcels` > 0, parcels_grid.gpkg) and `archive/`: `items.json` (a STAC ItemCollection,
    asset hrefs relative to its folder), `collection.json` (the Collection "sentinel-1-rtc",
    which `rustac serve collection.json items.json` serves) and `cogs/<item id>_vv.tif`,
    `_vh.tif` (float32 linear power COGs, nodata -32768).

    Each date is an ascending pass (relative orbit 74) of two overlapping slices: "N", scene
    rows r < 0.6 size on the scene's grid (EPSG:32630) at 06:15:00Z, and "S", rows r >= 0.4
    size reprojected (bilinear, on linear power) onto a north-up 10 m grid of EPSG:32629 at
    06:15:25Z. Every 5th date (the 1st, 6th, ...) also has a descending pass (relative orbit
    147), "D", the whole scene on its grid, the next day at 18:05:00Z, with the date's values
    plus 1.5 dB (VV) and 1.0 dB (VH). Item ids: `S1A_IW_GRDH_1SDV_<start, %Y%m%dT%H%M%S>_<N|S|D>`.
    """
    _check_grid_parcels(n_grid_parcels)
    scene = _in_memory(scene)

    def fill(folder: Path) -> None:
        layout = _write_archive_stac(scene, folder / ARCHIVE_DIR)
        if n_grid_parcels:
            write_grid_parcels(grid_parcels(scene, n_grid_parcels), folder / GRID_PARCELS_FILE)
        _write_ground_truth(scene, folder, {"archive": True, "archive_layout": layout})

    files = {**ARCHIVE_FILES, **({"parcels_grid": GRID_PARCELS_FILE} if n_grid_parcels else {})}
    return _write_folder(out_dir, fill, files, overwrite=overwrite)


__all__ = [
    "CALENDARS",
    "CLASSES",
    "CONFUSABLE",
    "DISTINCTIVE_WINDOWS",
    "EVENTS",
    "CropCalendar",
    "Scene",
    "SceneMeta",
    "check_trainable_dates",
    "read_scene_meta",
    "make_dates",
    "archive_slices",
    "grid_parcels",
    "make_scene",
    "scene_classes",
    "write_archive",
    "write_grid_parcels",
    "write_scene",
]
