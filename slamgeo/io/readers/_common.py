"""Helpers shared by the readers of `slamgeo.io.readers`: band names and the digital-number
encoding, lazy block-wise conversion to dB, the time window, asset hrefs, one-line error
messages, and the warning category of inputs read as asked but worth a look (`InputWarning`)."""

from __future__ import annotations

import datetime as dt
import posixpath
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import xarray as xr

from slamgeo.errors import ConfigError, InputError
from slamgeo.io import storage

DN_NODATA = (0, 65535)


class InputWarning(UserWarning):
    """An input read as asked but worth a look (a date tag that contradicts the file name, a
    stack too short to train on, a date without valid pixels). The message is one line that
    names the file or item; `slamgeo ingest` prints it as `warning: ...`."""


# WorldCereal / openEO uint16 encoding: dB = 20*log10(DN) - 83


# Input variable / column names for each band, checked in order.
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "VV": ("VV", "S1-SIGMA0-VV", "SIGMA0_VV", "vv"),
    "VH": ("VH", "S1-SIGMA0-VH", "SIGMA0_VH", "vh"),
}


# --- conversions ---------------------------------------------------------------------------------


def dn_to_db(dn: np.ndarray) -> np.ndarray:
    """uint16 digital numbers -> float32 dB, `20*log10(DN) - 83`; 0, 65535 and NaN become NaN."""
    d = np.asarray(dn, dtype=np.float64)
    valid = np.isfinite(d) & (d > DN_NODATA[0]) & (d < DN_NODATA[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(valid, 20.0 * np.log10(np.where(valid, d, 1.0)) - 83.0, np.nan)
    return out.astype(np.float32)


def _lazy(func, da: xr.DataArray) -> xr.DataArray:
    """Apply a NumPy conversion block by block (lazily if `da` is a Dask array)."""
    out = xr.apply_ufunc(func, da, dask="parallelized", output_dtypes=[np.float32])
    out.attrs = {"units": "dB"}
    return out


# --- names and messages --------------------------------------------------------------------------


def _suffix(p: storage.Location) -> str:
    return Path(storage.name(p)).suffix.lower()


def urlparse_path(href: str) -> str:
    """The path part of an href (a URL's path, or the href itself)."""
    return urlparse(href).path or href


def resolve_href(href: str, base: storage.Location) -> str:
    """An asset href as rasterio opens it: URLs as they are, relative paths from the folder
    `base` of the JSON that names it (a local folder or a URL)."""
    parsed = urlparse(href)
    if parsed.scheme in ("http", "https", "s3", "gs", "az", "vsicurl") or href.startswith("/vsi"):
        return href
    if parsed.scheme == "file":
        return parsed.path
    if storage.is_url(base):
        scheme, _, rest = str(base).partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, href))}"
    p = Path(href)
    return str(p if p.is_absolute() else (Path(base) / p).resolve())


def _one_line(exc: BaseException) -> str:
    """The messages of an exception and its causes on one line (GDAL puts the file name and
    the real problem in the causes of rasterio's "Read failed")."""
    msgs: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        m = " ".join(str(e).split())
        if m and m not in msgs:
            msgs.append(m)
        e = e.__cause__ or e.__context__
    return "; ".join(msgs)


def _dates_text(times: np.ndarray, idx: np.ndarray) -> str:
    shown = ", ".join(str(t)[:10] for t in times[idx[:5]])
    return f"{idx.size} date(s) ({shown}{', ...' if idx.size > 5 else ''})"


# --- dates ---------------------------------------------------------------------------------------


def parse_time_window(start: str | None, end: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """Check `start`/`end` (ISO dates such as 2023-01-01); raise `ConfigError` if unparseable."""
    out: list[pd.Timestamp | None] = []
    for name, value in (("start", start), ("end", end)):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(pd.Timestamp(value))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name}={value!r} is not a date (expected YYYY-MM-DD): {exc}") from exc
    if out[0] is not None and out[1] is not None and out[0] > out[1]:
        raise ConfigError(f"start {start} is after end {end}")
    return out[0], out[1]


def select_time(ds: xr.Dataset, start: str | None, end: str | None, *, where: str) -> xr.Dataset:
    """Keep the dates in [start, end], pandas partial-string style: end='2023-12-31' keeps that
    whole day, start='2023' means 2023-01-01. Raises `InputError` when no date remains."""
    parse_time_window(start, end)
    if start is None and end is None:
        return ds
    out = ds.sel(time=slice(start, end))
    if out.sizes["time"] == 0:
        t = ds["time"].values
        raise InputError(
            f"{where}: no date between start={start} and end={end}; the input covers "
            f"{str(t.min())[:10]} .. {str(t.max())[:10]}"
        )
    return out


def _to_datetime64(value: dt.datetime | pd.Timestamp) -> np.datetime64:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.to_datetime64(), "ns")


__all__ = [
    "BAND_ALIASES",
    "DN_NODATA",
    "InputWarning",
    "dn_to_db",
    "parse_time_window",
    "resolve_href",
    "select_time",
    "urlparse_path",
]
