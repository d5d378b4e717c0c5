"""The crops of the synthetic scene as data: the classes, their nominal calendars and canopies
(`CALENDARS`), the confusable classes and the days where they differ (`DISTINCTIVE_WINDOWS`);
how parcels are dealt to classes (`deal_classes`, with an optional `crop_mix`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from slamgeo.errors import InputError

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


# The annual crops, one a row (columns: `_ANNUAL_COLUMNS`): the `EVENTS` in days of the season
# year (None: no such event), then the canopy of `CropCalendar`: bmax, r_sen, stubble, the VV
# and VH gains (dB), the bump at the peak (dB), root crop, irrigated. Cotton, sweet potato and
# pepper share one calendar and one canopy: sweet potato is lifted green at 245 (a root crop,
# no senescence), pepper's canopy is 3 dB brighter around its peak.
_ANNUAL_COLUMNS = (*EVENTS, "bmax", "r_sen", "stubble", "vv_gain_db", "vh_gain_db", "bump_db", "root_crop", "irrigated")
# fmt: off
_ANNUAL: dict[str, tuple[float | bool | None, ...]] = {
    #                till sow  emer peak sen   harv post bmax  r_sen stub  VV    VH    bump root   irrig
    "cotton":       (70,  100, 112, 195, 255,  290, 325, 0.85, 0.4,  0.0,  0.0,  0.0,  0.0, False, True),
    "tomato":       (80,  110, 116, 180, 200,  225, 260, 0.8,  0.7,  0.05, 1.0,  0.0,  0.0, False, True),
    "sugar beet":   (-80, -65, -50, 120, 160,  190, 280, 1.1,  0.7,  0.0,  1.5,  0.5,  0.0, True,  True),
    "maize":        (85,  110, 120, 200, 230,  262, 300, 1.2,  0.6,  0.15, -1.0, 0.5,  0.0, False, True),
    "wheat":        (-50, -40, -25, 100, 125,  160, 290, 0.9,  0.5,  0.1,  -2.5, 0.0,  0.0, False, False),
    "sunflower":    (30,  55,  68,  145, 165,  205, 280, 1.0,  0.55, 0.12, 0.5,  0.0,  0.0, False, False),
    "carrot":       (-95, -80, -65, 55,  None, 110, 235, 0.7,  0.5,  0.0,  0.5,  0.0,  0.0, True,  True),
    "onion":        (-60, -45, -30, 105, 140,  165, 270, 0.55, 0.6,  0.0,  0.0,  0.0,  0.0, True,  True),
    "sweet potato": (70,  100, 112, 195, None, 245, 325, 0.85, 0.5,  0.0,  0.0,  0.0,  0.0, True,  True),
    "pumpkin":      (95,  120, 128, 185, 210,  240, 290, 0.8,  0.6,  0.0,  2.0,  -0.5, 0.0, False, True),
    "pepper":       (70,  100, 112, 195, 255,  290, 325, 0.85, 0.4,  0.0,  0.0,  0.0,  3.0, False, True),
    "potato":       (10,  25,  45,  100, 125,  150, 200, 1.0,  0.55, 0.0,  1.0,  0.0,  0.0, True,  True),
    "chickpea":     (20,  35,  50,  110, 130,  165, 280, 0.6,  0.5,  0.08, -0.5, 0.0,  0.0, False, False),
}
# fmt: on
_OTHERS: dict[str, CropCalendar] = {
    # perennial, cut about every 33 days from April to October
    "alfalfa": CropCalendar(
        kind="cut", bmax=0.9, cuts=(100, 133, 166, 199, 232, 265, 298), vh_gain_db=0.5, irrigated=True
    ),
    "quinoa": CropCalendar(kind="flat", peak=140, bmax=0.35, width=55.0),  # a low, broad canopy
    "fallow": CropCalendar(kind="flat", bmax=0.15, width=30.0),  # spring weeds
}


def _annual(row: tuple[float | bool | None, ...]) -> CropCalendar:
    """A row of `_ANNUAL` as a calendar; None leaves the event out (NaN)."""
    given: dict[str, Any] = {k: v for k, v in zip(_ANNUAL_COLUMNS, row, strict=True) if v is not None}
    return CropCalendar(**given)


CALENDARS: dict[str, CropCalendar] = {c: _OTHERS[c] if c in _OTHERS else _annual(_ANNUAL[c]) for c in CLASSES}
# Days of the season year where a class differs from cotton (the rest is drawn from one law),
# allowing for the per-parcel jitter of up to +-20 days: pepper's brighter peak (195 +- 20
# days), sweet potato's early lifting (245) until cotton is picked (290).
DISTINCTIVE_WINDOWS: dict[str, tuple[int, int]] = {"pepper": (155, 235), "sweet potato": (225, 310)}
CONFUSABLE: tuple[str, ...] = ("cotton", "sweet potato", "pepper")

_FLOATS = ("bmax", "r_sen", "stubble", "vv_gain_db", "vh_gain_db", "bump_db", "bump_halfwidth", "width")


def class_table() -> dict[str, np.ndarray]:
    """Per-class parameters as arrays indexed by class id: the `EVENTS` (float days, NaN where
    none), the float fields of `CropCalendar`, `root_crop`, `irrigated` (bool) and `kind`."""
    cals = [CALENDARS[c] for c in CLASSES]
    out = {k: np.array([getattr(c, k) for c in cals], float) for k in (*EVENTS, *_FLOATS)}
    for k in ("root_crop", "irrigated"):
        out[k] = np.array([getattr(c, k) for c in cals], bool)
    out["kind"] = np.array([c.kind for c in cals])
    return out


def calendars_json() -> dict[str, dict[str, object]]:
    """`CALENDARS` as JSON values, in `CLASSES` order (NaN: null), for scene.json."""
    return {
        c: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vars(CALENDARS[c]).items()}
        for c in CLASSES
    }


def check_crop_mix(crop_mix: Mapping[str, float] | None) -> np.ndarray | None:
    """The weights of `crop_mix` as an array in `CLASSES` order, or None for the default (an
    equal share each). `crop_mix` maps class names to non-negative weights relative to that
    equal share (1); classes left out keep 1, so `{"maize": 3, "wheat": 0}` makes maize three
    times as common and leaves wheat out. `InputError` for an unknown class, a weight that is
    negative or not finite, or no positive weight."""
    if not crop_mix:
        return None
    unknown = sorted(str(c) for c in crop_mix if c not in CLASSES)
    if unknown:
        raise InputError(f"crop_mix: unknown class {', '.join(map(repr, unknown))}; the classes are {list(CLASSES)}")
    w = np.ones(len(CLASSES))
    for name, v in crop_mix.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InputError(f"crop_mix: the weight of {name!r} must be a finite number >= 0, found {v!r}")
        w[CLASSES.index(name)] = float(v)
    if not (w > 0).any():
        raise InputError("crop_mix: every weight is 0; at least one class needs a positive weight")
    return w


def deal_classes(n: int, crop_mix: Mapping[str, float] | None = None) -> np.ndarray:
    """The class ids (int64, into `CLASSES`) of `n` parcels in dealing order (`make_scene`
    gives them to a shuffled parcel list). Without `crop_mix`: round-robin, class i of parcel
    i mod 16. With it (`check_crop_mix`): smooth weighted round-robin, so each prefix of the
    sequence holds the classes in proportion to their weights (equal weights give the
    round-robin exactly) and a class of weight 0 never occurs."""
    w = check_crop_mix(crop_mix)
    if w is None:
        return np.arange(n, dtype=np.int64) % len(CLASSES)
    out = np.empty(n, np.int64)
    current = np.zeros(len(CLASSES))
    total = w.sum()
    for i in range(n):
        current += w
        k = int(np.argmax(current))  # ties: the first class
        out[i] = k
        current[k] -= total
    return out


__all__ = [
    "CALENDARS",
    "CLASSES",
    "CONFUSABLE",
    "DISTINCTIVE_WINDOWS",
    "EVENTS",
    "CropCalendar",
    "calendars_json",
    "check_crop_mix",
    "class_table",
    "deal_classes",
]
