"""Seasons on a schedule: one configuration for every season (`{season}`), the newest model of
an earlier season reused (`model: {reuse: latest}`), drift against the model's season with
`retrain: auto`, one run per season at a time (the lock), and `slamgeo seasons` over the
output root.

Three synthetic seasons from one configuration file: 2017 trains; 2018 is drawn with another
seed and a 12-day revisit (the same crop laws: keep); 2019 with the crops' calendars 45 days
late and 8 dates missing (retrain). The scene's drift settings are the generator's, given to
the one file's configuration as overrides of `input` (a scheduler runs the file unchanged)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import step_status
from hostile_helpers import assert_one_line_error, damage, slamgeo_here, snapshot

from slamgeo.errors import ConfigError, InputError, SeasonLocked
from slamgeo.pipeline.config import fill_season, load_config
from slamgeo.pipeline.drift import measure_drift, read_drift
from slamgeo.pipeline.lock import LOCK_FILE, acquire, heartbeat, read_lock, season_lock, stale_reason
from slamgeo.pipeline.seasons import TrainedModel, latest_model, list_seasons, retrain_on_drift, with_reused_model
from slamgeo.pipeline.steps import STEPS, run_pipeline

pytestmark = pytest.mark.timeout(300)

# One file for every season: the scene's dates and seed follow the season. The size and the
# training are the smallest at which the drift thresholds (docs/drift.md, chosen at 256 x 256)
# hold: the model is trained on a quarter of the pixels, so the reference season's
# reconstruction errors are mostly those of pixels it did not see.
SEASONAL = {
    "season": {"start": "{season}-01-01"},
    "output": "out",
    "input": {
        "kind": "synthetic",
        "synthetic": {"size": 128, "n_dates": 61, "seed": "{season}", "start": "{season}-01-03"},
    },
    "chunk": 64,
    "model": {
        "reuse": "latest",
        "train": {"sample_size": 4000, "max_epochs": 12, "batch_size": 512, "threads": 1},
    },
    "kmeans": {"k": 8, "sample_size": 4000},
    "report": {"confused_pairs": 1},
}
# the generator's drift, per season (none for 2017)
DRIFTS = {
    "2018": {"step_days": 12, "n_dates": 31},  # another seed, another revisit: the same crop laws
    "2019": {"calendar_shift_days": 45, "missing_dates": 8},  # calendars 45 days late
}


def _write(tmp: Path, name: str, raw: dict) -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def _lock(pid: int, host: str | None = None, started: dt.datetime | None = None) -> str:
    when = (started or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    return json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": when, "token": "0123abcd"})


def _season_config(path: Path, season: str):
    """The configuration file for `season`, with the generator's drift of that season."""
    cfg = load_config(path, season=season)
    if season not in DRIFTS:
        return cfg
    synthetic = cfg.input.synthetic.model_copy(update=DRIFTS[season])
    return cfg.model_copy(update={"input": cfg.input.model_copy(update={"synthetic": synthetic})})


@pytest.fixture(scope="module")
def seasons(tmp_path_factory, local_cluster):
    """2017 trains (no earlier season); 2018 reuses 2017's model and keeps it; 2019 reuses it,
    drifts and trains its own; all from one configuration."""
    tmp = tmp_path_factory.mktemp("seasons")
    path = _write(tmp, "season.yaml", SEASONAL)
    runs = {
        s: run_pipeline(_season_config(path, s), client=local_cluster, quiet=True) for s in ("2017", "2018", "2019")
    }
    return tmp, path, runs


# --------------------------------------------------------------------------- {season}


def test_season_fills_every_string_value_before_validation(tmp_path):
    raw = {"a": ["x/{season}/y", 3, None], "b": {"c": "{season}", "d": "{{literal}}"}}
    assert fill_season(raw, "2024") == {"a": ["x/2024/y", 3, None], "b": {"c": "2024", "d": "{literal}"}}
    cfg = load_config(_write(tmp_path, "s.yaml", SEASONAL), season="2024")
    assert cfg.season.name == "2024" and cfg.season.start == "2024-01-01"
    assert cfg.input.synthetic.seed == 2024 and cfg.input.synthetic.start == "2024-01-03"
    assert cfg.output == str(tmp_path / "out")
    named = load_config(_write(tmp_path, "n.yaml", {**SEASONAL, "season": {"name": "s{season}"}}), season=2024)
    assert named.season.name == "s2024"


@pytest.mark.parametrize(
    ("changes", "season", "cause"),
    [
        ({"output": "out/{year}"}, "2024", r"output: unknown placeholder \{year\}"),
        ({"output": "out/{season}"}, None, r"output: .* holds \{season\}; give the season"),
        ({"output": "out/{"}, "2024", r"output: .*literal braces"),
    ],
)
def test_a_wrong_placeholder_is_a_config_error_naming_the_key(tmp_path, changes, season, cause):
    raw = {"season": {"name": "x"}, **changes}
    with pytest.raises(ConfigError, match=cause):
        load_config(_write(tmp_path, "s.yaml", raw), season=season)


def test_run_season_on_the_command_line(tmp_path):
    path = _write(tmp_path, "season.yaml", SEASONAL)
    res = slamgeo_here("run", path, "--season", "2030", "--dry-run", cwd=tmp_path)
    assert res.rc == 0, res
    assert "season 2030:" in res.stdout and "would run" in res.stdout
    assert not (tmp_path / "out" / "2030" / LOCK_FILE).exists()


@pytest.mark.parametrize(
    ("raw", "args", "names", "cause"),
    [
        (SEASONAL, (), ["season.start", "input.synthetic"], r"holds \{season\}; give the season"),
        ({**SEASONAL, "output": "out/{year}"}, ("--season", "2024"), ["output"], r"unknown placeholder \{year\}"),
        (
            {**SEASONAL, "model": {"reuse": "latest", "checkpoint": "m"}},
            ("--season", "2024"),
            ["model"],
            "model.reuse or model.checkpoint, not both",
        ),
    ],
)
def test_a_wrong_season_on_the_command_line_is_one_line(tmp_path, raw, args, names, cause):
    path = _write(tmp_path, "season.yaml", raw)
    before = snapshot(tmp_path)
    res = slamgeo_here("run", path, *args, cwd=tmp_path)
    assert res.rc == 1
    assert_one_line_error(res, names, cause)
    assert not damage(before, snapshot(tmp_path)) and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- reuse: latest


def test_the_first_season_trains_and_the_next_reuses_its_model(seasons):
    tmp, _, runs = seasons
    for s in ("2017", "2018", "2019"):  # 2019's second run, with its own model, reads the same cube
        want = {n: "skipped" if (s, n) == ("2019", "ingest") else "done" for n in STEPS}
        assert step_status(runs[s]) == want, [x.error for x in runs[s].steps]
        assert not (runs[s].season_dir / LOCK_FILE).exists()
    train = {s: next(x for x in runs[s].steps if x.name == "train").info for s in runs}
    assert "reused" not in train["2017"] and train["2017"]["model_season"] == "2017"
    assert train["2018"]["reused"] == str(tmp / "out" / "2017" / "model") and train["2018"]["model_season"] == "2017"
    assert not (runs["2018"].season_dir / "model").exists()
    manifests = {s: json.loads(Path(runs[s].manifest).read_text()) for s in ("2017", "2018")}
    assert manifests["2017"]["model_season"] == "2017" and manifests["2018"]["model_season"] == "2017"
    page = (runs["2018"].season_dir / "report" / "index.html").read_text()
    assert "slamgeo season 2018 (model of season 2017)" in page
    # the newest model trained by an earlier season: for 2018, 2017's (not 2019's, trained since)
    found = latest_model(tmp / "out", before="2018")
    assert found is not None and found.season == "2017"
    assert latest_model(tmp / "out", before="2017") is None
    assert latest_model(tmp / "out", before="2020").season == "2019"  # 2018 trained none, 2019 its own


# --------------------------------------------------------------------------- drift


def _drift(runs, season: str) -> dict:
    return json.loads((runs[season].season_dir / "drift.json").read_text())


def test_the_same_crop_laws_keep_the_model_and_late_calendars_retrain(seasons, local_cluster):
    tmp, path, runs = seasons
    assert not (runs["2017"].season_dir / "drift.json").exists()  # its own model: nothing to compare
    keep, late = _drift(runs, "2018"), _drift(runs, "2019")
    assert (keep["reference_season"], keep["season"], keep["verdict"], keep["reasons"]) == ("2017", "2018", "keep", [])
    assert (late["reference_season"], late["season"], late["verdict"]) == ("2017", "2019", "retrain")
    summary = late["measures"]["summary"]
    assert len(late["reasons"]) >= 3 and 30 <= summary["importance_lag_days"] <= 60, late["reasons"]
    assert abs(keep["measures"]["summary"]["importance_lag_days"]) < 20
    # the dates whose importance moved most lie at transitions of the crops' calendars as drawn
    # for 2019 (45 days late): within two revisits of a sowing, emergence, peak, senescence,
    # harvest or tillage of some parcel; the lag above says by how much they moved
    truth = pd.read_csv(runs["2019"].season_dir / "scene" / "phenology.csv")
    events = pd.to_datetime(
        truth[["tillage", "sowing", "emergence", "peak", "senescence_start", "harvest", "post_tillage"]]
        .stack()
        .dropna()
        .unique()
    )
    for d in late["measures"]["importance"]["top_dates"]:
        assert abs(events - pd.Timestamp(d)).min() <= pd.Timedelta(days=12), d
    # retrain: auto: 2019 trained its own model after the drift, and keeps it on the next run
    manifests = sorted((runs["2019"].season_dir / "manifests").glob("run-*.json"))
    assert [json.loads(m.read_text())["model_season"] for m in manifests] == ["2017", "2019"]
    train = next(x for x in runs["2019"].steps if x.name == "train").info
    assert "reused" not in train and (runs["2019"].season_dir / "model" / "model.json").exists()
    again = run_pipeline(_season_config(path, "2019"), client=local_cluster, quiet=True)
    assert step_status(again) == {n: "skipped" for n in STEPS}
    # the report: season against season
    for s, verdict in (("2018", "keep"), ("2019", "retrain")):
        page = (runs[s].season_dir / "report" / "index.html").read_text()
        assert f"Season against season: {s} against 2017" in page and f"{verdict} (season {s} against 2017)" in page
        assert (runs[s].season_dir / "report" / "season_against_season.png").exists()
        assert "Class composition, 2017 and " + s in page


@pytest.mark.parametrize(
    ("retrain", "reuses", "trains_after_drift"),
    [("auto", False, True), ("never", True, False), ("always", False, False)],
)
def test_retrain_modes_decide_from_the_drift_verdict(seasons, retrain, reuses, trains_after_drift):
    """Against the outputs of the three seasons: 2019's drift.json says retrain against 2017."""
    tmp, path, _ = seasons
    cfg = _season_config(path, "2019")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"retrain": retrain})})
    resolved, reused = with_reused_model(cfg)  # auto: 2019 drifted from 2017's model, so it trains its own
    assert (reused is not None) == reuses and (resolved.model.checkpoint is not None) == reuses
    model_2017 = TrainedModel("2017", tmp / "out" / "2017" / "model", "")
    own = retrain_on_drift(cfg, model_2017, tmp / "out" / "2019")  # after a run that reused it
    assert (own is not None) == trains_after_drift
    assert own is None or own.model.checkpoint is None
    assert retrain_on_drift(cfg, None, tmp / "out" / "2019") is None  # nothing reused: nothing to retrain


# --------------------------------------------------------------------------- the lock


def test_a_second_run_of_a_season_under_way_is_refused(seasons):
    tmp, path, runs = seasons
    lock = runs["2018"].season_dir / LOCK_FILE
    lock.write_text(_lock(os.getpid()))  # a live process on this host
    try:
        before = snapshot(tmp / "out")
        res = slamgeo_here("run", path, "--season", "2018", cwd=tmp)
        assert res.rc == 75, res
        line = assert_one_line_error(res, [str(lock)], rf"being run by pid {os.getpid()} on {socket.gethostname()}")
        assert "try again later" in line
        assert not damage(before, snapshot(tmp / "out")) and snapshot(tmp / "out").keys() == before.keys()
    finally:
        lock.unlink()


def test_a_lock_of_a_process_gone_is_taken_over(seasons, local_cluster):
    _, path, runs = seasons
    lock = runs["2018"].season_dir / LOCK_FILE
    lock.write_text(_lock(_dead_pid()))
    summary = run_pipeline(_season_config(path, "2018"), client=local_cluster, quiet=True)
    assert step_status(summary) == {n: "skipped" for n in STEPS}
    assert not lock.exists()


def test_locks_of_another_host_are_taken_over_only_when_old(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text(_lock(1, host="elsewhere.example"))
    with pytest.raises(SeasonLocked, match=r"being run by pid 1 on elsewhere.example"):
        acquire(lock, season="x")
    lock.write_text(_lock(1, host="elsewhere.example", started=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)))
    mine = acquire(lock, season="x")
    assert read_lock(lock) == mine and mine["pid"] == os.getpid()


def test_a_lock_from_another_host_is_taken_over_when_its_heartbeat_stops(tmp_path):
    lock = tmp_path / LOCK_FILE
    now = dt.datetime.now(dt.UTC)
    holder = json.loads(_lock(1, host="elsewhere.example", started=now - dt.timedelta(days=1)))
    lock.write_text(json.dumps({**holder, "heartbeat": (now - dt.timedelta(minutes=1)).isoformat()}))
    with pytest.raises(SeasonLocked, match="elsewhere.example"):  # a day-long run, still beating
        acquire(lock, season="x")
    lock.write_text(json.dumps({**holder, "heartbeat": (now - dt.timedelta(minutes=20)).isoformat()}))
    assert "heartbeat stopped 20 min ago" in stale_reason(read_lock(lock))
    assert acquire(lock, season="x")["pid"] == os.getpid()


def test_the_holder_refreshes_its_heartbeat_until_it_ends(tmp_path):
    lock = tmp_path / LOCK_FILE
    with season_lock(tmp_path, season="x", heartbeat_s=0.05) as mine:
        first = read_lock(lock)["heartbeat"]
        deadline = time.monotonic() + 10
        while read_lock(lock)["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_lock(lock)["heartbeat"] > first and read_lock(lock)["token"] == mine["token"]
        lock.write_text(_lock(os.getpid()))  # taken over by another run: the beat stops writing
        time.sleep(0.3)
        assert "heartbeat" not in read_lock(lock)
    assert lock.exists()  # another run's lock is not removed
    assert not heartbeat(lock, mine)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_removed_on_failure_and_interrupt(tmp_path, exc):
    with pytest.raises(exc), season_lock(tmp_path, season="x"):
        assert read_lock(tmp_path / LOCK_FILE)["pid"] == os.getpid()
        raise exc
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_on_object_storage_is_written_if_absent():
    url = "memory://slamgeo-lock-test/2018"
    with season_lock(url, season="2018") as mine:
        with pytest.raises(SeasonLocked, match=rf"{url}/{LOCK_FILE}: season 2018 is being run by pid {os.getpid()}"):
            acquire(f"{url}/{LOCK_FILE}", season="2018")
        assert read_lock(f"{url}/{LOCK_FILE}") == mine
    assert read_lock(f"{url}/{LOCK_FILE}") is None


# --------------------------------------------------------------------------- slamgeo seasons


def test_seasons_lists_each_season_in_text_and_json(seasons):
    tmp, _, _ = seasons
    res = slamgeo_here("seasons", tmp / "out", cwd=tmp)
    assert res.rc == 0, res
    lines = res.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["2017", "2018", "2019"]
    assert "2017-01-03 .. 2017-" in lines[0] and "model 2017" in lines[0] and "model 2017" in lines[1]
    assert "model 2019" in lines[2] and all(f"{len(STEPS)}/{len(STEPS)} steps done" in ln for ln in lines)
    assert [ln.split("drift ")[-1] for ln in lines] == ["-", "keep (vs 2017)", "retrain (vs 2017)"]
    res = slamgeo_here("seasons", tmp / "out", "--json", cwd=tmp)
    rows = json.loads(res.stdout)
    assert rows == [r.to_dict() for r in list_seasons(tmp / "out")]
    assert [(r["season"], r["model_season"], r["first"][:4], r["drift"]) for r in rows] == [
        ("2017", "2017", "2017", "-"),
        ("2018", "2017", "2018", "keep (vs 2017)"),
        ("2019", "2019", "2019", "retrain (vs 2017)"),
    ]
    assert all(0 <= r["oa"] <= 1 and r["kappa"] is not None and r["done"] == list(STEPS) for r in rows)


def test_seasons_of_an_empty_or_missing_root_is_one_line(tmp_path):
    res = slamgeo_here("seasons", tmp_path, cwd=tmp_path)
    assert res.rc == 0 and res.stdout.strip() == f"{tmp_path}: no seasons yet"
    assert json.loads(slamgeo_here("seasons", tmp_path, "--json", cwd=tmp_path).stdout) == []
    res = slamgeo_here("seasons", tmp_path / "nowhere", cwd=tmp_path)
    assert_one_line_error(res, [str(tmp_path / "nowhere")], "no such output folder")


# --------------------------------------------------------------------------- drift outputs, directly


def test_drift_of_a_season_whose_reference_has_no_results_is_one_line(seasons):
    tmp, path, _ = seasons
    with pytest.raises(InputError, match=r"out/1999/results.zarr: the results of season 1999, whose model"):
        measure_drift(_season_config(path, "2018"), tmp / "out" / "2018", "1999")


def test_a_damaged_drift_file_reads_as_none(tmp_path):
    assert read_drift(tmp_path) is None
    (tmp_path / "drift.json").write_text('{"verdict": "ke')
    assert read_drift(tmp_path) is None
    (tmp_path / "drift.json").write_text('{"verdict": "maybe"}')
    assert read_drift(tmp_path) is None
    (tmp_path / "drift.json").write_text('{"verdict": "keep", "reference_season": "2017"}')
    assert read_drift(tmp_path)["verdict"] == "keep"


def test_a_profile_on_another_years_dates_is_interpolated_onto_the_reference_dates():
    from slamgeo.reporting.seasons import _on_dates

    onto = np.array(pd.date_range("2017-01-03", periods=10, freq="6D"), dtype="datetime64[ns]")
    times = np.array(pd.date_range("2018-01-05", periods=5, freq="12D"), dtype="datetime64[ns]")
    values = np.array([1.0, 3.0, np.nan, 7.0, 9.0])
    got = _on_dates(values, times, onto)
    moved = (pd.DatetimeIndex(times) - pd.DateOffset(years=1)).asi8
    ok = np.isfinite(values)
    want = np.interp(pd.DatetimeIndex(onto).asi8, moved[ok], values[ok], left=np.nan, right=np.nan)
    np.testing.assert_allclose(got, want)
    assert np.isnan(got[0]) and np.isfinite(got[1:9]).all()  # 2017-01-03 lies before 2018-01-05 moved back
    np.testing.assert_array_equal(_on_dates(values[:5], onto[:5], onto[:5]), values[:5])  # same dates: as is


def test_the_class_composition_table_gives_each_seasons_shares_in_percent():
    from slamgeo.reporting.seasons import composition_table

    ref = pd.DataFrame([[6, 2], [0, 2]], index=["maize", "wheat"], columns=["maize", "wheat"])
    new = pd.DataFrame([[1, 0], [1, 8]], index=["maize", "wheat"], columns=["maize", "wheat"])
    html = composition_table(ref, new, ("2017", "2019"))
    rows = [re.findall(r"<t[hd]>(.*?)</t[hd]>", r) for r in re.findall(r"<tr>(.*?)</tr>", html)]
    assert rows == [
        ["class", "labelled 2017", "voted 2017", "labelled 2019", "voted 2019"],
        ["maize", "80.0", "60.0", "10.0", "20.0"],  # 8 of 10 labelled, 6 of 10 voted; 1 of 10, 2 of 10
        ["wheat", "20.0", "40.0", "90.0", "80.0"],
    ]
