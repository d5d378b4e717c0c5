"""One run per season at a time: the lock file `<output>/<season>/.slamgeo-lock`.

The lock is a small JSON file (pid, host, start time, a random token) created only if absent:
locally with `O_CREAT | O_EXCL`; on object storage with fsspec's write-if-absent mode "xb"
where the filesystem has it (else written after an existence check), and read back in both
cases, so that of two writers racing only the one whose token is there goes on.

While the run goes on, a heartbeat thread rewrites the lock's `heartbeat` time every
`HEARTBEAT_S` seconds (60 s; only while the file still holds this run's token). A lock is
stale, and taken over, when it was written on this host by a process that is gone (a run killed
with SIGKILL, a machine rebooted), or on another host when its heartbeat is older than
`HEARTBEAT_STALE_S` (15 min: the machine or its process died without removing it); a lock
without a heartbeat (an older slamgeo) from another host after `STALE_AFTER_S` (48 h). A live holder makes the run stop with
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
import threading
from collections.abc import Iterator
from pathlib import Path

from slamgeo.errors import SeasonLocked
from slamgeo.io import storage

LOCK_FILE = ".slamgeo-lock"
STALE_AFTER_S = 48 * 3600.0  # a lock without heartbeat from another host is taken over after this long
HEARTBEAT_S = 60.0  # the holder refreshes the lock's heartbeat this often
HEARTBEAT_STALE_S = 15 * 60.0  # a lock from another host whose heartbeat is this old is taken over


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


def stale_reason(
    holder: dict,
    *,
    now: dt.datetime | None = None,
    stale_after_s: float = STALE_AFTER_S,
    heartbeat_stale_s: float = HEARTBEAT_STALE_S,
) -> str | None:
    """Why the lock of `holder` may be taken over, None while it holds."""
    if not holder:
        return None
    if holder.get("host") == socket.gethostname():
        return None if _pid_alive(holder["pid"]) else f"process {holder['pid']} is gone"
    beat = "heartbeat" in holder
    try:
        when = dt.datetime.fromisoformat(str(holder.get("heartbeat" if beat else "started")))
        age = ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()
    except (ValueError, TypeError):  # no date, or one without a time zone
        return None
    if beat:
        return f"its heartbeat stopped {age / 60:.0f} min ago on another host" if age > heartbeat_stale_s else None
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
    mine["heartbeat"] = mine["started"]
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
        f"(a lock of a process gone on this host, or one from another host whose heartbeat stopped "
        f"{HEARTBEAT_STALE_S / 60:.0f} min ago, is taken over; remove the file if no run is going on)"
    )


def release(path: storage.Location, mine: dict) -> None:
    """Remove the lock at `path` if it is still this run's."""
    _remove_if(path, mine)


def heartbeat(path: storage.Location, mine: dict) -> bool:
    """Rewrite the lock at `path` with a new heartbeat time if it still holds `mine` (its token);
    True when it did. (Between the read and the write another run could take over a lock whose
    heartbeat is `HEARTBEAT_STALE_S` old; with beats every `HEARTBEAT_S`, that never happens
    to a live holder.)"""
    now = read_lock(path)
    if not now or now.get("token") != mine.get("token"):
        return False
    mine["heartbeat"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    storage.write_bytes(path, json.dumps(mine).encode())
    return True


@contextlib.contextmanager
def season_lock(
    season_dir: storage.Location,
    *,
    season: str,
    stale_after_s: float = STALE_AFTER_S,
    heartbeat_s: float = HEARTBEAT_S,
) -> Iterator[dict]:
    """Hold the lock of the season folder `season_dir` while the block runs, its heartbeat
    refreshed every `heartbeat_s` seconds by a daemon thread (released on any exit: success,
    error, interrupt)."""
    path = storage.join(season_dir, LOCK_FILE)
    mine = acquire(path, season=season, stale_after_s=stale_after_s)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            try:
                if not heartbeat(path, mine):
                    return
            except OSError:  # storage unreachable for a moment: try at the next beat
                continue

    thread = threading.Thread(target=beat, name="slamgeo-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield mine
    finally:
        stop.set()
        thread.join(timeout=5.0)
        release(path, mine)


__all__ = [
    "HEARTBEAT_S",
    "HEARTBEAT_STALE_S",
    "LOCK_FILE",
    "STALE_AFTER_S",
    "acquire",
    "heartbeat",
    "read_lock",
    "release",
    "season_lock",
    "stale_reason",
]
