"""One run per season at a time: the lock file `<output>/<season>/.slamgeo-lock`.

The lock is a small JSON file (pid, host, start time, a random token) created only if absent:
locally with `O_CREAT | O_EXCL`; on object storage with fsspec's write-if-absent mode "xb"
where the filesystem has it (else written after an existence check), and read back in both
cases, so that of two writers racing only the one whose token is there goes on.

A lock is stale, and taken over, when it was written on this host by a process that is gone
(a run killed with SIGKILL, a machine rebooted), or on another host more than
`STALE_AFTER_S` seconds (48 h) ago: a run on another machine cannot be checked, so a season run
is assumed never to take that long there. A live holder makes the run stop with
`SeasonLocked` (one line naming the lock file and its holder; the command's exit code 75).
The lock is removed when the run ends, whether it succeeded, failed or was interrupted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

from slamgeo.errors import SeasonLocked
from slamgeo.io import storage

LOCK_FILE = ".slamgeo-lock"
STALE_AFTER_S = 48 * 3600.0  # a lock written on another host is taken over after this long


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_lock(path: storage.Location) -> dict | None:
    """The holder recorded in the lock file (`pid`, `host`, `started`, `token`); None when
    there is no lock; `{}` for a file that is not a lock slamgeo wrote whole (being written)."""
    try:
        doc = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    ok = isinstance(doc, dict) and isinstance(doc.get("pid"), int) and isinstance(doc.get("token"), str)
    return doc if ok else {}


def stale_reason(holder: dict, *, now: dt.datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the lock of `holder` may be taken over, None while it holds."""
    if not holder:
        return None
    if holder.get("host") == socket.gethostname():
        return None if _pid_alive(holder["pid"]) else f"process {holder['pid']} is gone"
    try:
        age = ((now or dt.datetime.now(dt.UTC)) - dt.datetime.fromisoformat(str(holder.get("started")))).total_seconds()
    except (ValueError, TypeError):  # no date, or one without a time zone
        return None
    return f"written {age / 3600:.0f} h ago on another host" if age > stale_after_s else None


def _describe(holder: dict) -> str:
    if not holder:
        return "a run whose lock is being written, or a file that is not slamgeo's"
    return f"pid {holder['pid']} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


def _create(path: storage.Location, data: bytes) -> bool:
    """Write `data` to `path` only if there is no file there; True when this call's data is there."""
    fs, p = storage.filesystem(path)
    if storage.is_local(path):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    try:
        with fs.open(p, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):  # no write-if-absent on this filesystem
        if fs.exists(p):
            return False
        fs.pipe_file(p, data)
    try:
        return fs.cat_file(p) == data  # another writer may have come in between
    except FileNotFoundError:
        return False


def _remove_if(path: storage.Location, holder: dict) -> None:
    """Remove the lock file if it still holds `holder` (its token)."""
    now = read_lock(path)
    if now and now.get("token") == holder.get("token"):
        with contextlib.suppress(FileNotFoundError):
            storage.remove(path)


def acquire(path: storage.Location, *, season: str, stale_after_s: float = STALE_AFTER_S) -> dict:
    """Take the lock at `path` for this process and return what it holds; a stale lock is
    taken over; `SeasonLocked` naming the lock and its holder while another run holds it."""
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "token": secrets.token_hex(8),
    }
    data = json.dumps(mine).encode()
    holder: dict | None = {}
    for _ in range(3):  # a lock released or taken over between the calls: try again
        if _create(path, data):
            return mine
        holder = read_lock(path)
        if holder is None:
            continue
        if stale_reason(holder, stale_after_s=stale_after_s) is None:
            break
        _remove_if(path, holder)
    raise SeasonLocked(
        f"{path}: season {season} is being run by {_describe(holder or {})}; try again later "
        f"(a lock of a process gone on this host, or older than {stale_after_s / 3600:.0f} h from another "
        "host, is taken over; remove the file if no run is going on)"
    )


def release(path: storage.Location, mine: dict) -> None:
    """Remove the lock at `path` if it is still this run's."""
    _remove_if(path, mine)


@contextlib.contextmanager
def season_lock(season_dir: storage.Location, *, season: str, stale_after_s: float = STALE_AFTER_S) -> Iterator[dict]:
    """Hold the lock of the season folder `season_dir` while the block runs (released on any
    exit: success, error, interrupt)."""
    path = storage.join(season_dir, LOCK_FILE)
    mine = acquire(path, season=season, stale_after_s=stale_after_s)
    try:
        yield mine
    finally:
        release(path, mine)


__all__ = ["LOCK_FILE", "STALE_AFTER_S", "acquire", "read_lock", "release", "season_lock", "stale_reason"]
