"""From the crops' calendars to backscatter: each parcel's event days, its relative biomass over
the season and its noise-free VV and VH profiles (a water-cloud model over a rough, wet soil).
The model is described in `slamgeo.synth`; the crops are `slamgeo.synth.crops`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slamgeo.synth.crops import CALENDARS, CLASSES, EVENTS, class_table

VV_RANGE_DB = (-20.0, -5.0)
VH_RANGE_DB = (-28.0, -12.0)

# Fallow's spring weeds peak on this day; quinoa's broad canopy at its `peak`.
_FALLOW_WEEDS_DAY = 95.0
_REGROWTH_DAY = 20.0  # alfalfa's winter stand starts growing towards its first cut
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
_MIN_GAP = {"sowing": 5, "emergence": 5, "peak": 30, "senescence_start": 5, "harvest": 7, "post_tillage": 10}
RAIN_DB = (1.5, 3.0)  # the rise of VV on a rainy date, U(low, high) dB
RAIN_VH_FRACTION = 0.3


@dataclass(frozen=True)
class ParcelCalendars:
    """The parcels' drawn calendars: `events` name -> day of each parcel (P,) float (NaN where
    none), `cuts` each parcel's cut days (alfalfa; empty otherwise), `class_id` (P,) and the
    `shift_days` every calendar was moved by (the non-event days, fallow's weeds and alfalfa's
    spring regrowth, move with it)."""

    events: dict[str, np.ndarray]
    cuts: list[np.ndarray]
    class_id: np.ndarray
    shift_days: float = 0.0


def parcel_events(
    rng: np.random.Generator, class_id: np.ndarray, *, calendar_shift_days: float = 0.0
) -> ParcelCalendars:
    """Per-parcel event days and alfalfa cut days (`slamgeo.synth`, Phenology), for parcels of
    the classes `class_id` (P,). `calendar_shift_days` moves every nominal calendar (events and
    cuts) by that many days before the per-parcel jitter."""
    tab = class_table()
    n = class_id.size
    shift = np.clip(rng.normal(0, 6, n), -14, 14)
    events: dict[str, np.ndarray] = {}
    prev = np.full(n, -np.inf)
    for ev in EVENTS:
        nominal = tab[ev][class_id] + calendar_shift_days
        day = np.round(nominal + shift + np.clip(rng.normal(0, 2.5, n), -6, 6))
        day = np.where(np.isnan(nominal), np.nan, np.maximum(day, prev + _MIN_GAP.get(ev, 0)))
        prev = np.where(np.isnan(day), prev, day)
        events[ev] = day
    cuts = []
    for i, c in enumerate(class_id):
        nominal = np.asarray(CALENDARS[CLASSES[c]].cuts, float) + calendar_shift_days
        jit = np.round(nominal + shift[i] + np.clip(rng.normal(0, 2, nominal.size), -4, 4))
        for k in range(1, jit.size):
            jit[k] = max(jit[k], jit[k - 1] + 20)
        cuts.append(jit)
    for i, c in enumerate(class_id):
        if CALENDARS[CLASSES[c]].kind == "cut":
            events["harvest"][i] = cuts[i][0]
    return ParcelCalendars(events, cuts, class_id, calendar_shift_days)


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _biomass(t: np.ndarray, cal: ParcelCalendars, bmax: np.ndarray) -> np.ndarray:
    """Relative biomass (P, T) of each parcel on the days `t` (T,) of the season year, for the
    maximum biomass `bmax` (P,)."""
    tab = class_table()
    ev, cuts, class_id = cal.events, cal.cuts, cal.class_id
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
        weeds_day = _FALLOW_WEEDS_DAY + cal.shift_days
        centre = np.where(np.isnan(ev["peak"][flat]), weeds_day, ev["peak"][flat])[:, None]
        width = tab["width"][class_id[flat]][:, None]
        b[flat] = 0.05 + bmax[flat][:, None] * np.exp(-0.5 * ((T - centre) / width) ** 2)
    # Alfalfa: winter stand, spring growth to the first cut, then cut and regrow.
    regrowth = _REGROWTH_DAY + cal.shift_days
    for i in np.flatnonzero(kind == "cut"):
        c = cuts[i]
        bi = 0.45 + 0.45 * _smoothstep((t - regrowth) / (c[0] - regrowth))
        for k, ck in enumerate(c):
            top = 0.9 if k + 1 < c.size else 0.6  # autumn regrowth is slower
            after = t >= ck
            bi = np.where(after, _CUT_B + (top - _CUT_B) * (1 - np.exp(-(t - ck) / 12.0)), bi)
        b[i] = bi * bmax[i] / 0.9
    return b


def profiles(
    rng: np.random.Generator, t: np.ndarray, cal: ParcelCalendars, rain_db: np.ndarray
) -> dict[str, np.ndarray]:
    """Noise-free backscatter (linear power), (P + 1, T) float32 per band on the days `t` (T,)
    of the season year, for the parcels' calendars `cal` (`parcel_events`), with the rain's
    rise `rain_db` (T,) in dB; row 0: margins and roads. The weather (soil moisture's yearly
    cycle, the rain) does not move with the calendars."""
    tab = class_table()
    ev, class_id = cal.events, cal.class_id
    n = class_id.size
    bmax = tab["bmax"][class_id] * rng.uniform(0.85, 1.1, n)
    offset = rng.normal(0, 0.7, n)
    gains = {b: tab[f"{b.lower()}_gain_db"][class_id] + rng.normal(0, 0.4, n) for b in ("VV", "VH")}
    B = _biomass(t, cal, bmax)
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
        rise = rain_db if band == "VV" else RAIN_VH_FRACTION * rain_db
        sigma_db = np.clip(sigma_db + rise[None, :], *lo_hi)
        out[band] = (10 ** (sigma_db / 10)).astype(np.float32)
    return out


__all__ = ["RAIN_DB", "VH_RANGE_DB", "VV_RANGE_DB", "ParcelCalendars", "parcel_events", "profiles"]
