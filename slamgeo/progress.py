"""Progress of long work: one display per step. On a terminal or in a notebook a tqdm bar; when
the stream is not a terminal (a log file, a scheduled run), plain lines at a sensible rate
instead of redraws: one at the start, at most one every `SLAMGEO_PROGRESS_INTERVAL` seconds
(default 30), one at the end."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Any, Protocol, cast

PROGRESS_INTERVAL = 30.0  # seconds between two plain progress lines (SLAMGEO_PROGRESS_INTERVAL)


class Progress(Protocol):
    """What a step's progress display offers (tqdm's names): `update`, `set_postfix`, `close`."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> Any: ...

    def close(self) -> Any: ...


def progress_bar(
    total: int,
    desc: str,
    unit: str,
    *,
    enabled: bool = True,
    initial: int = 0,
    file: IO[str] | None = None,
    interval: float | None = None,
) -> Progress:
    """The progress display of one step: `total` `unit`s (singular), `initial` of them done.

    On a terminal (or in a notebook), a tqdm bar; when `file` (default stderr) is not a
    terminal, `PlainProgress` lines at most every `interval` seconds (default
    `SLAMGEO_PROGRESS_INTERVAL`, else 30). Disabled: a display that shows nothing.
    Close it when the work ends (or use it as a context manager)."""
    stream = file if file is not None else sys.stderr
    if not enabled:
        return PlainProgress(total, desc, unit, initial=initial, file=stream, enabled=False)
    if file is None and _in_notebook():
        from tqdm.auto import tqdm as tqdm_auto

        return cast(Progress, tqdm_auto(total=total, initial=initial, desc=desc, unit=unit))
    if _is_terminal(stream):
        from tqdm import tqdm

        return cast(Progress, tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True))
    if interval is None:
        try:
            interval = float(os.environ.get("SLAMGEO_PROGRESS_INTERVAL", PROGRESS_INTERVAL))
        except ValueError:
            interval = PROGRESS_INTERVAL
    return PlainProgress(total, desc, unit, initial=initial, file=stream, interval=interval)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    """True in a Jupyter kernel (whose output is no terminal, but shows tqdm's widget)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class PlainProgress:
    """Progress as plain lines for logs: "explain: 12/40 blocks (30%), 45 s", one when the
    work starts, then at most one every `interval` seconds, and one at `close` (with the
    total time). `set_postfix` adds "key=value" pairs to the next line."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        initial: int = 0,
        file: IO[str] | None = None,
        interval: float = PROGRESS_INTERVAL,
        enabled: bool = True,
    ):
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.file = file if file is not None else sys.stderr
        self.interval, self.enabled = float(interval), enabled
        self._t0 = time.monotonic()
        self._postfix = ""
        self._shown: int | None = None  # the count of the last line written
        self._last = -float("inf")
        self._closed = False
        self._emit(time.monotonic())

    def _line(self, now: float, *, final: bool = False) -> str:
        units = self.unit if self.total == 1 else f"{self.unit}s"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total > 0 else ""
        secs = now - self._t0
        when = f" in {secs:.1f} s" if final else (f", {secs:.0f} s" if self._shown is not None else "")
        extra = f"; {self._postfix}" if self._postfix else ""
        return f"{self.desc}: {self.n}/{self.total} {units}{pct}{when}{extra}"

    def _emit(self, now: float, *, final: bool = False) -> None:
        if not self.enabled:
            return
        print(self._line(now, final=final), file=self.file, flush=True)
        self._shown, self._last = self.n, now

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._emit(now)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**dict(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._emit(time.monotonic(), final=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def dask_progress(desc: str, *, enabled: bool = True, file: IO[str] | None = None) -> Iterator[None]:
    """`progress_bar` over the tasks of the Dask computations of a local scheduler (threads,
    synchronous) started inside the block: a drop-in for `dask.diagnostics.ProgressBar` that
    writes plain lines instead of redraws when the stream is not a terminal. A distributed
    client's computations are not seen (as with ProgressBar)."""
    if not enabled:
        yield
        return
    from dask.callbacks import Callback

    bars: list[Progress] = []

    def start_state(dsk: Any, state: dict) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        bars.append(progress_bar(total, desc, "task", initial=len(state["finished"]), file=file))

    def posttask(key: Any, result: Any, dsk: Any, state: dict, worker_id: Any) -> None:
        if bars:
            bars[-1].update(1)

    def finish(dsk: Any, state: dict, errored: bool) -> None:
        if bars:
            bars.pop().close()

    with Callback(start_state=start_state, posttask=posttask, finish=finish):
        yield


__all__ = ["PROGRESS_INTERVAL", "PlainProgress", "Progress", "dask_progress", "progress_bar"]
