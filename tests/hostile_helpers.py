"""Helpers of tests/test_hostile.py: run the CLI as a user does, snapshot a folder tree, check
that an error is one line, and make a folder unwritable (also when the tests run as root)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_VENV_SLAMGEO = ROOT / ".venv" / "bin" / "slamgeo"
SLAMGEO = [str(_VENV_SLAMGEO)] if _VENV_SLAMGEO.exists() else [sys.executable, "-m", "slamgeo"]

# AWS settings that point at nothing: a closed port on loopback, dummy credentials, one
# attempt per request (so that the refusal comes in seconds, not after minutes of retries).
UNREACHABLE_S3 = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    "AWS_ACCESS_KEY_ID": "dummy",
    "AWS_SECRET_ACCESS_KEY": "dummy",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_RETRY_MODE": "standard",
}


@dataclass
class Result:
    args: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:  # what an assertion shows
        tail = "\n".join(self.output.splitlines()[-25:])
        return f"$ slamgeo {' '.join(self.args)}\nexit code {self.rc}\n--- output (last lines) ---\n{tail}"


def slamgeo(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> Result:
    """`slamgeo ARGS...` in a subprocess, as a user types it; never raises on a non-zero exit."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full_env.update({"MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    args = [str(a) for a in args]
    proc = subprocess.run([*SLAMGEO, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def slamgeo_here(*args, cwd: Path) -> Result:
    """`slamgeo ARGS...` run by `slamgeo.cli.main` in this process (the same entry point as the
    command, without the seconds of a new interpreter), from `cwd`; a traceback that escapes
    `main` is put into stderr as a subprocess would print it."""
    import contextlib
    import io
    import sys
    import traceback

    from slamgeo.cli import main

    args = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, sys.unraisablehook, os.getcwd()
    rc = 0
    try:
        sys.argv = ["slamgeo", *args]
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - what the user would see
                traceback.print_exc()
                rc = 1
    finally:
        sys.argv, sys.unraisablehook = saved[0], saved[1]
        os.chdir(saved[2])
    return Result(args, rc, out.getvalue(), err.getvalue())


# --- snapshots -------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (symlinks not followed) -> sha256 of its bytes ("link:TARGET"
    for a symlink), keyed by the path relative to `root`."""
    out: dict[str, str] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = f"link:{os.readlink(p)}"
                continue
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[rel] = h.hexdigest()
    return out


def damage(before: dict[str, str], after: dict[str, str], *, exempt: tuple[str, ...] = ()) -> list[str]:
    """What happened to the files of `before`: "missing PATH" or "changed PATH" (new files are
    allowed, at new paths). Paths under a prefix in `exempt` (relative folder paths) are not
    checked: outputs the command may legitimately replace."""

    def is_exempt(rel: str) -> bool:
        return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exempt)

    problems = []
    for rel, digest in sorted(before.items()):
        if is_exempt(rel):
            continue
        if rel not in after:
            problems.append(f"missing {rel}")
        elif after[rel] != digest:
            problems.append(f"changed {rel}")
    return problems


def new_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(set(after) - set(before))


def describe_damage(problems: list[str], limit: int = 12) -> str:
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} pre-existing file(s) lost or changed:\n  " + "\n  ".join(problems[:limit]) + more


# --- one-line errors -------------------------------------------------------------------------


def assert_one_line_error(res: Result, names, cause: str | None = None) -> str:
    """The command failed (non-zero exit code), printed no traceback, and its output holds
    exactly one line starting with `error:`, which is the last line of stderr, names one of
    `names` (paths, keys) and matches the regular expression `cause` (case-insensitive).
    Returns that line."""
    names = [str(n) for n in ([names] if isinstance(names, (str, Path)) else names)]
    assert res.rc != 0, f"expected a failure, the command succeeded\n{res}"
    assert "Traceback" not in res.output, f"a traceback was printed\n{res}"
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one 'error:' line, found {len(errors)}\n{res}"
    line = errors[0]
    tail = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert tail and tail[-1] == line, f"the 'error:' line is not the last line of stderr\n{res}"
    assert any(n in line for n in names), f"the error line names none of {names}: {line!r}\n{res}"
    if cause is not None:
        assert re.search(cause, line, re.IGNORECASE), f"the error line does not give the cause /{cause}/: {line!r}"
    return line


# --- unwritable folders ----------------------------------------------------------------------


def _chattr(flag: str, path: Path, recursive: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    cmd = ["chattr", *(["-R"] if recursive else []), flag, str(path)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


@contextlib.contextmanager
def unwritable(*paths: Path, recursive: bool = False):
    """Make each folder in `paths` unwritable while the block runs: `chmod a-w` for a normal
    user; as root (whom permissions do not stop) the immutable attribute (`chattr +i`), and a
    pytest skip, with the reason, where the file system does not support it. `recursive`: the
    folders' contents too. Everything is restored on exit."""
    done: list[tuple[Path, object]] = []
    try:
        for path in paths:
            path = Path(path)
            if os.geteuid() != 0:
                items = [path, *(path.rglob("*") if recursive else ())]
                modes = {p: p.stat().st_mode for p in items}
                for p in items:
                    p.chmod(modes[p] & ~0o222)
                done.append((path, modes))
            else:
                if not _chattr("+i", path, recursive):
                    pytest.skip(
                        f"running as root and `chattr +i` is not available on {path}'s file system: "
                        "no way to make a folder unwritable for root"
                    )
                done.append((path, None))
            probe = path / ".probe-unwritable"
            with contextlib.suppress(OSError):
                probe.mkdir()
                probe.rmdir()
                pytest.skip(f"{path} is still writable after chmod/chattr")
        yield
    finally:
        for path, modes in reversed(done):
            if modes is None:
                _chattr("-i", path, recursive)
            else:
                for p, m in modes.items():
                    p.chmod(m)
