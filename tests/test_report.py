"""The report: every figure on small data (values checked against numpy), make_report's HTML
and skipped list, the grid and sample forms, the CLI end to end, and under a real LocalCluster
the work on the workers: figures drawn there (the same page), maps thinned and profiles reduced
there (checked against numpy on the full arrays), nothing of the size of a map in the driver."""

import base64
import html
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import torch
import xarray as xr
from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib.collections import LineCollection
from matplotlib.image import AxesImage

from slamgeo.errors import InputError
from slamgeo.jobs.metrics import confusion
from slamgeo.method.faithfulness import deletion_curves
from slamgeo.reporting import FigureSkipped
from slamgeo.reporting import figures as report
from slamgeo.reporting.figures import (
    fig_class_importance,
    fig_cluster_map,
    fig_confusion,
    fig_deletion_curve,
    fig_embedding_scatter,
    fig_importance_map,
    fig_recon_error_map,
    importance_segments,
)
from slamgeo.reporting.page import make_report
from slamgeo.reporting.readers import load_curves, read_groups, sample_variables, save_curves
from slamgeo.synth import CLASSES

pytestmark = pytest.mark.timeout(120)

D, T, NY, NX = 2, 12, 20, 24
TIMES = pd.date_range("2017-01-03", periods=T, freq="12D").values
THREE = ["cotton", "sweet potato", "pepper"]


def _results(seed: int = 0, *, scale: str = "minmax", clustered: bool = True) -> xr.Dataset:
    """A small gridded results Dataset: random embedding / importance / error, 5 clusters,
    the top 2 rows no data."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(D, NY, NX)).astype(np.float32)
    imp = rng.uniform(size=(D, T, NY, NX)).astype(np.float32)
    if scale == "centred":
        imp = 2 * imp - 1
    err = rng.gamma(2.0, 0.1, size=(NY, NX)).astype(np.float32)
    cl = rng.integers(0, 5, size=(NY, NX)).astype(np.int16)
    emb[:, :2], imp[:, :, :2], err[:2], cl[:2] = np.nan, np.nan, np.nan, -1
    ds = xr.Dataset(
        {
            "embedding": (("dim", "y", "x"), emb),
            "importance": (("dim", "time", "y", "x"), imp, {"scale": scale}),
            "recon_error": (("y", "x"), err, {"units": "standardised units squared"}),
        },
        coords={
            "dim": np.arange(D),
            "time": TIMES,
            "y": 4_110_000 - 10.0 * np.arange(NY) - 5,
            "x": 230_000 + 10.0 * np.arange(NX) + 5,
        },
        attrs={
            "slamgeo_version": "test",
            "scale": scale,
            "slamgeo_complete": True,
            "dates": ",".join(str(t)[:10] for t in TIMES),
        },
    )
    if clustered:
        ds["cluster"] = (("y", "x"), cl, {"k": 5})
    return ds.rio.write_crs(32630)


def _profiles(classes=THREE, seed: int = 1) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    imp = rng.uniform(size=(len(classes), D, T))
    lo, hi = imp.min(-1, keepdims=True), imp.max(-1, keepdims=True)
    return xr.Dataset(
        {
            "importance": (("class", "dim", "time"), (imp - lo) / (hi - lo)),
            "VV": (("class", "time"), rng.uniform(-16, -8, size=(len(classes), T)), {"units": "dB"}),
            "n_parcels": (("class",), np.arange(len(classes)) + 2),
        },
        coords={"class": np.asarray(classes, dtype=object), "dim": np.arange(D), "time": TIMES},
    )


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# --------------------------------------------------------------------------- Fig. 3


def test_confusion_cells_are_the_row_normalised_percentages():
    classes = ["beet", "cotton", "wheat"]
    counts = pd.DataFrame([[8, 1, 1, 0], [2, 5, 0, 3], [0, 0, 0, 0]], index=classes, columns=[*classes, "unassigned"])
    fig = fig_confusion(counts, title="held-out pixels")
    ax = fig.axes[0]
    c = counts.to_numpy(float)
    rows = c.sum(1, keepdims=True)
    with np.errstate(invalid="ignore"):
        expected = np.where(rows > 0, 100 * c / rows, np.nan)
    want = ["n/a" if np.isnan(v) else format(v, ".1f") for v in expected.ravel()]
    assert _texts(ax) == want
    assert [t.get_text() for t in ax.get_xticklabels()] == [*classes, "unassigned"]
    assert [t.get_text() for t in ax.get_yticklabels()] == classes
    assert ax.get_title() == "held-out pixels"
    assert "reference" in ax.get_ylabel() and "predicted" in ax.get_xlabel()
    assert "%" in fig.axes[1].get_ylabel()  # the colour bar


def test_confusion_from_metrics_dataset_matches_its_percent():
    rng = np.random.default_rng(0)
    classes = list(CLASSES)
    y_true = rng.choice(classes, 2000)
    y_pred = np.where(rng.uniform(size=2000) < 0.7, y_true, rng.choice(classes, 2000))
    cm = confusion(y_true, y_pred, classes)
    fig = fig_confusion(cm)
    ax = fig.axes[0]
    assert _texts(ax) == [format(v, ".0f") for v in cm["percent"].values.ravel()]  # 16 classes: whole %
    assert [t.get_text() for t in ax.get_yticklabels()] == classes
    assert report.confusion_percent(cm).shape == (16, 16)  # no unassigned unit: no extra column


# --------------------------------------------------------------------------- Fig. 4


def test_class_importance_line_colours_map_the_normalised_importance():
    prof = _profiles()
    fig = fig_class_importance(prof, ["pepper", "cotton"])
    fig.canvas.draw()
    axes = [a for a in fig.axes if a.get_ylabel() == "mean VV (dB)"]
    assert len(axes) == D
    assert [a.get_title(loc="left") for a in axes] == [f"embedding dimension {d}" for d in range(D)]
    tnum = mdates.date2num(TIMES)
    cmap = colormaps[report.IMPORTANCE_CMAP]
    for d, ax in enumerate(axes):
        lcs = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert [lc.get_label() for lc in lcs] == ["pepper", "cotton"]
        for lc, cls in zip(lcs, ["pepper", "cotton"]):
            w = prof["importance"].sel({"class": cls, "dim": d}).values
            segs = np.asarray(lc.get_segments())
            mid_t = segs[:, :, 0].mean(1)
            np.testing.assert_allclose(lc.get_array(), np.interp(mid_t, tnum, w), atol=1e-12)
            # the segments follow the class's VV profile
            vv = prof["VV"].sel({"class": cls}).values
            np.testing.assert_allclose(segs[:, 0, 1], np.interp(segs[:, 0, 0], tnum, vv), atol=1e-9)
            assert (lc.norm.vmin, lc.norm.vmax) == (0.0, 1.0)
            np.testing.assert_allclose(lc.get_colors(), cmap(lc.get_array()), atol=1e-6)
    bar = [a for a in fig.axes if "importance" in a.get_ylabel()]
    assert len(bar) == 1 and bar[0].get_ylim() == (0.0, 1.0)
    assert isinstance(axes[-1].xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    assert any(t.get_text() in ("Feb", "Mar", "Apr", "May") for t in axes[-1].get_xticklabels())
    assert "pepper" in fig.get_suptitle()


def test_class_importance_normalises_raw_importance_and_refuses_bad_input():
    prof = _profiles()
    raw = prof.assign(importance=prof["importance"] * 7 + 3)  # outside [0, 1]: min-max again
    fig = fig_class_importance(raw, ["cotton"])
    lc = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)][0]
    assert lc.get_array().min() >= 0 and lc.get_array().max() <= 1 + 1e-12
    with pytest.raises(FigureSkipped, match=r"not found; available: \['cotton', 'sweet potato', 'pepper'\]"):
        fig_class_importance(prof, ["maize"])
    with pytest.raises(FigureSkipped, match="--cube"):
        fig_class_importance(prof.drop_vars("VV"), ["cotton"])


def test_importance_segments_skip_missing_dates():
    v = np.array([-10.0, np.nan, -12.0, -11.0])
    w = np.array([0.0, 0.5, 1.0, 0.0])
    segs, cols = importance_segments(TIMES[:4], v, w, n_sub=2)
    assert segs.shape == (2, 2, 2) and cols.tolist() == [0.75, 0.25]  # only the interval 2-3


# --------------------------------------------------------------------------- maps


def test_cluster_map_shows_clusters_and_names():
    ds = _results()
    fig = fig_cluster_map(ds["cluster"], names={0: "maize", 3: "wheat"})
    ax = fig.axes[0]
    im = [c for c in ax.get_children() if isinstance(c, AxesImage)][0]
    arr = im.get_array()
    np.testing.assert_array_equal(arr.mask, ds["cluster"].values < 0)
    np.testing.assert_array_equal(arr.data[~arr.mask], ds["cluster"].values[ds["cluster"].values >= 0])
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels == ["0: maize", "1", "2", "3: wheat", "4"]
    assert "EPSG:32630" in ax.get_xlabel() and ax.get_ylabel().startswith("y (m")
    assert ax.get_title().startswith("k-Means clusters")


def test_importance_map_takes_the_nearest_date():
    ds = _results()
    fig = fig_importance_map(ds["importance"], "2017-01-29")  # acquisitions on 01-27 and 02-08
    axes = [a for a in fig.axes if a.get_title().startswith("embedding dimension")]
    assert len(axes) == D
    for d, ax in enumerate(axes):
        im = [c for c in ax.get_children() if isinstance(c, AxesImage)][0]
        want = ds["importance"].isel(dim=d, time=2).values
        np.testing.assert_allclose(np.ma.filled(im.get_array(), np.nan), want, equal_nan=True)
        assert (im.norm.vmin, im.norm.vmax) == (0.0, 1.0)
    assert "2017-01-27" in fig.get_suptitle() and "nearest acquisition to 2017-01-29" in fig.get_suptitle()
    assert "scaling 'minmax'" in fig.axes[-1].get_ylabel()
    signed = _results(scale="centred")
    im = [
        c for c in fig_importance_map(signed["importance"], TIMES[0]).axes[0].get_children() if isinstance(c, AxesImage)
    ][0]
    assert im.get_cmap().name.startswith("RdBu_r") and (im.norm.vmin, im.norm.vmax) == (-1.0, 1.0)
    with pytest.raises(InputError, match="outside the acquisitions 2017-01-03 .. 2017-05-15"):
        fig_importance_map(ds["importance"], "2018-06-01")
    with pytest.raises(InputError, match="expected YYYY-MM-DD"):
        fig_importance_map(ds["importance"], "June")


def test_recon_error_map_and_thinning(monkeypatch):
    ds = _results()
    fig = fig_recon_error_map(ds["recon_error"])
    im = [c for c in fig.axes[0].get_children() if isinstance(c, AxesImage)][0]
    finite = ds["recon_error"].values[np.isfinite(ds["recon_error"].values)]
    assert im.norm.vmax == pytest.approx(np.percentile(finite, 99))
    assert "standardised units squared" in fig.axes[1].get_ylabel()
    monkeypatch.setattr(report, "MAX_MAP_SIDE", 10)
    fig = fig_recon_error_map(ds["recon_error"])
    im = [c for c in fig.axes[0].get_children() if isinstance(c, AxesImage)][0]
    assert im.get_array().shape == (7, 8)  # stride 3 on 20 x 24
    assert "1 pixel in 3 per side" in fig.axes[0].get_title()
    np.testing.assert_allclose(im.get_extent(), [230_000, 230_240, 4_109_800, 4_110_000])
    with pytest.raises(FigureSkipped, match="sample-form"):
        fig_recon_error_map(ds["recon_error"].stack(sample=("y", "x")).reset_index("sample", drop=True))


# --------------------------------------------------------------------------- scatter and curves


def test_embedding_scatter_subsamples_and_labels():
    rng = np.random.default_rng(0)
    n = 30_000
    emb = rng.normal(size=(n, 2))
    labels = rng.choice(["wheat", "maize", "cotton"], n).astype(object)
    labels[:100] = ""  # unlabelled: left out
    emb[100:200] = np.nan
    fig = fig_embedding_scatter(emb, labels)
    ax = fig.axes[0]
    assert ax.collections[0].get_offsets().shape == (20_000, 2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cotton", "maize", "wheat"]
    assert "20,000 of 29,800 points" in ax.get_title()
    assert ax.get_xlabel() == "embedding dimension 0" and ax.get_ylabel() == "embedding dimension 1"
    # gridded DataArrays, cluster labels with -1 = none, and the PCA view of D = 3
    ds = _results()
    fig = fig_embedding_scatter(ds["embedding"], ds["cluster"], label_name="cluster", names={0: "0: maize"})
    valid = int((ds["cluster"].values >= 0).sum())
    assert fig.axes[0].collections[0].get_offsets().shape == (valid, 2)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "0: maize"
    fig = fig_embedding_scatter(rng.normal(size=(50, 3)), np.repeat(["a", "b"], 25))
    assert fig.axes[0].get_xlabel().startswith("principal component 1")
    with pytest.raises(FigureSkipped, match="no point"):
        fig_embedding_scatter(np.full((5, 2), np.nan), ["a"] * 5)


def _curves(seed: int):
    rng = np.random.default_rng(seed)
    k = torch.tensor([1.0, 2.0, 4.0])
    base = torch.tensor([[0.1, 0.2], [0.2, 0.3], [0.4, 0.5]], dtype=torch.float64)
    top = base + torch.as_tensor(rng.uniform(0, 0.3, (3, 2)))
    return {
        "k": k,
        "top": top,
        "baseline": base,
        "ratio": top / base,
        "embedding_std": torch.tensor([2.0, 0.5], dtype=torch.float64),
    }


def test_deletion_curve_plots_top_and_baseline_in_std_units():
    one = _curves(0)
    fig = fig_deletion_curve(one)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == D
    for d, ax in enumerate(axes):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        std = one["embedding_std"][d].item()
        np.testing.assert_allclose(lines["Grad-SLAM: top-k dates"].get_ydata(), one["top"][:, d].numpy() / std)
        np.testing.assert_allclose(lines["k random dates"].get_ydata(), one["baseline"][:, d].numpy() / std)
        assert ax.get_xlabel().startswith("k, dates deleted") and "std" in ax.get_ylabel()
    two = fig_deletion_curve({"Grad-SLAM": one, "gradient × input": _curves(1)})
    labels = [ln.get_label() for ln in two.axes[0].get_lines()]
    # one shared baseline
    assert labels == ["Grad-SLAM: top-k dates", "gradient × input: top-k dates", "k random dates"]
    with pytest.raises(FigureSkipped, match="expected keys k, top, baseline"):
        fig_deletion_curve({"x": {"k": [1]}})


def test_faithfulness_curves_of_a_tiny_model_round_trip(tmp_path):
    from slamgeo.method.model import CAE, CAEConfig

    torch.manual_seed(0)
    cae = CAE(CAEConfig(n_times=16, embed_dim=2, channels=(4, 8), kernels=(3, 3), hidden=(8,))).eval()
    x = torch.randn(12, 2, 16)
    curves = deletion_curves(cae, x, [1, 3], methods=("gradslam", "gradient_x_input"), scale="minmax", n_random=2)
    assert list(curves) == ["Grad-SLAM (minmax)", "gradient × input"]
    for c in curves.values():
        assert c["top"].shape == c["baseline"].shape == (2, 2) and c["k"].tolist() == [1.0, 3.0]
        assert np.all(c["top"] >= 0)
    np.testing.assert_array_equal(curves["Grad-SLAM (minmax)"]["baseline"], curves["gradient × input"]["baseline"])
    back = load_curves(save_curves(curves, tmp_path / "curves.json"))
    np.testing.assert_allclose(back["gradient × input"]["top"], curves["gradient × input"]["top"])
    assert back["gradient × input"]["baseline_name"] == "k random dates"
    assert len(fig_deletion_curve(back).axes) == 2
    (tmp_path / "other.json").write_text('{"x": {"k": [1]}}')
    with pytest.raises(InputError, match=r"other\.json: faithfulness curves 'x': expected keys k, top, baseline"):
        load_curves(tmp_path / "other.json")  # a file of the wrong form is bad input, naming the file


def test_a_figure_the_inputs_do_not_allow_is_skipped_and_bad_input_is_not():
    assert not issubclass(FigureSkipped, InputError)  # the page skips the one, never the other
    none = xr.full_like(_results()["cluster"], -1).assign_attrs(k=0)
    with pytest.raises(FigureSkipped, match="no pixel has a cluster"):
        fig_cluster_map(none)


def test_the_report_stage_needs_the_cube_with_the_model(tmp_path):
    from slamgeo.reporting.page import report as report_stage

    with pytest.raises(InputError, match="model= needs cube="):
        report_stage(_results(), None, tmp_path / "rep", model=object())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pairs= needs model= and cube="):
        report_stage(_results(), None, tmp_path / "rep", pairs=[("cotton", "pepper")])
    assert not (tmp_path / "rep").exists()


# --------------------------------------------------------------------------- make_report


def _parcels_dir(path, classes=THREE):
    """What `slamgeo parcels --out` writes, by hand; confusion_parcels.csv left out."""
    path.mkdir()
    rng = np.random.default_rng(3)
    counts = pd.DataFrame(rng.integers(0, 40, (len(classes), len(classes))), index=classes, columns=classes)
    counts.index.name = "true"
    counts["unassigned"] = [0, 4, 0]
    counts.to_csv(path / "confusion_pixels.csv")
    prof = _profiles(classes)
    prof.assign_coords({"class": prof["class"].values.astype(str)}).to_zarr(path / "class_profiles.zarr", zarr_format=2)
    n = 9
    pp = xr.Dataset(
        {"embedding": (("parcel", "dim"), rng.normal(size=(n, D)))},
        coords={
            "parcel": np.arange(1, n + 1),
            "dim": np.arange(D),
            "label": ("parcel", np.asarray(classes * 3, dtype=str)),
        },
    )
    pp.to_zarr(path / "parcels.zarr", zarr_format=2)
    metrics = {
        "cluster_class": {"0": "cotton", "1": "pepper"},
        "classes": classes,
        "pixels": {
            "overall_accuracy": 0.5,
            "kappa": 0.25,
            "macro_f1": 0.4,
            "n": 300.0,
            "per_class": {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 100.0} for c in classes},
        },
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def _cube(ds: xr.Dataset) -> xr.Dataset:
    rng = np.random.default_rng(5)
    vv = rng.uniform(-16, -8, size=(T, NY, NX)).astype(np.float32)
    return xr.Dataset(
        {"VV": (("time", "y", "x"), vv), "VH": (("time", "y", "x"), vv - 7)},
        coords={"time": TIMES, "y": ds["y"].values, "x": ds["x"].values},
    )


def _report_items(out):
    return {i["key"]: i for i in json.loads((out / "report.json").read_text())["figures"]}


def test_make_report_embeds_every_png_and_lists_skipped(tmp_path):
    ds = _results()
    pdir = _parcels_dir(tmp_path / "parcels")
    groups = {"confusable": ["cotton", "pepper"], "typo": ["cottn"]}
    page = make_report(
        ds.chunk({"y": 10, "x": 12}),
        tmp_path / "rep",
        cube=_cube(ds),
        parcels_dir=pdir,
        class_groups=groups,
        date="2017-02-08",
        faithfulness=_curves(0),
        title="test run",
    )
    assert page == tmp_path / "rep" / "index.html"
    text = page.read_text()
    items = _report_items(tmp_path / "rep")
    drawn = {k for k, i in items.items() if i["file"]}
    assert drawn == {
        "fig3_confusion_pixels",
        "fig4_class_importance_confusable",
        "cluster_importance_clusters_1_4",
        "cluster_importance_clusters_5",
        "map_cluster",
        "map_importance",
        "map_recon_error",
        "embedding_pixels_cluster",
        "embedding_parcels_class",
        "faithfulness_deletion",
    }
    for key in drawn:
        png = (tmp_path / "rep" / items[key]["file"]).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(png).decode() in text  # embedded, so the page is one file
        assert f'href="{items[key]["file"]}"' in text
    assert text.count("<img ") == len(drawn)
    skipped = {k: i["skipped"] for k, i in items.items() if i["skipped"]}
    assert set(skipped) == {"fig3_confusion_parcels", "fig4_class_importance_typo"}
    assert "confusion_parcels.csv not found" in skipped["fig3_confusion_parcels"]
    assert "['cottn'] not found" in skipped["fig4_class_importance_typo"]
    for reason in skipped.values():
        assert html.escape(reason) in text
    assert "<title>test run</title>" in text and "50.0 %" in text  # accuracy table
    assert "Importance map, 2017-02-08" in text


def test_make_report_sample_form_skips_maps(tmp_path):
    ds = _results().stack(sample=("y", "x")).reset_index("sample", drop=True)
    ds = ds.isel(sample=np.flatnonzero(ds["cluster"].values >= 0))
    crops = np.asarray(THREE * (ds.sizes["sample"] // 3 + 1))[: ds.sizes["sample"]]
    ds = ds.assign_coords(
        crop=("sample", crops.astype(object)), parcel_id=("sample", np.arange(ds.sizes["sample"]) // 4 + 1)
    )
    make_report(ds, tmp_path / "rep")
    items = _report_items(tmp_path / "rep")
    for key in ("map_cluster", "map_importance", "map_recon_error"):
        assert "sample-form" in items[key]["skipped"]
    assert items["embedding_samples_class"]["file"] and items["embedding_pixels_cluster"]["file"]
    assert "--parcels-dir" in items["fig3_confusion_pixels"]["skipped"]
    assert "--cube" in items["cluster_importance"]["skipped"]


def test_read_groups_json_yaml_and_bad(tmp_path):
    (tmp_path / "g.yaml").write_text("confusable:\n  - cotton\n  - pepper\n")
    (tmp_path / "g.json").write_text('{"a": ["maize"]}')
    (tmp_path / "bad.json").write_text('["cotton"]')
    assert read_groups(tmp_path / "g.yaml") == {"confusable": ["cotton", "pepper"]}
    assert read_groups(tmp_path / "g.json") == {"a": ["maize"]}
    with pytest.raises(InputError, match="expected a mapping of group name"):
        read_groups(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no class-groups file"):
        read_groups(tmp_path / "none.json")


# --------------------------------------------------------------------------- CLI


def test_cli_report_on_a_tiny_store(tmp_path):
    ds = _results()
    ds.to_zarr(tmp_path / "results.zarr", zarr_format=2)
    pdir = _parcels_dir(tmp_path / "parcels")
    (tmp_path / "groups.yaml").write_text("confusable: [cotton, pepper]\n")
    save_curves(_curves(0), tmp_path / "curves.json")
    out = tmp_path / "rep"
    cmd = [
        sys.executable,
        "-m",
        "slamgeo",
        "report",
        str(tmp_path / "results.zarr"),
        "--out",
        str(out),
        "--parcels-dir",
        str(pdir),
        "--date",
        "2017-03-04",
        "--groups",
        str(tmp_path / "groups.yaml"),
        "--faithfulness",
        str(tmp_path / "curves.json"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == str(out / "index.html")
    items = _report_items(out)
    assert items["fig4_class_importance_confusable"]["file"] and items["faithfulness_deletion"]["file"]
    assert items["map_importance"]["title"] == "Importance map, 2017-03-04"

    bad = cmd[:7] + ["--date", "not-a-date"]
    run = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip() == "error: --date 'not-a-date': expected YYYY-MM-DD"


def test_sample_variables_reads_a_bounded_number_of_chunks():
    ds = _results().chunk({"y": 5, "x": 6})  # 4 x 4 chunks
    ds["twice"] = ds["recon_error"] * 2
    got = sample_variables(ds, ["embedding", "recon_error", "twice"], max_blocks=3, max_pixels=10_000)
    assert got["embedding"].shape == (D, 90) and got["recon_error"].shape == (90,)
    np.testing.assert_array_equal(got["twice"], got["recon_error"] * 2)  # the same pixels in every variable
    flat = ds["recon_error"].values.ravel()
    finite = got["recon_error"][np.isfinite(got["recon_error"])]
    assert np.isin(finite, flat).all()
    strided = sample_variables(ds, ["recon_error"], max_blocks=100, max_pixels=120)["recon_error"]
    assert strided.shape == (144,)  # stride 2 in y and x inside each 5 x 6 chunk: 3 x 3 of its pixels


def test_embedding_scatter_of_a_dim_without_coordinate():
    fig = fig_embedding_scatter(
        xr.DataArray(np.random.default_rng(0).random((2, 30)), dims=("dim", "sample")), np.array(["a", "b", "c"] * 10)
    )
    assert fig.axes and fig.axes[0].get_xlabel()


def test_cluster_pairs_are_drawn_without_labels(tmp_path):
    """Without parcels, the pairs are k-Means clusters: their figure uses the cluster profiles."""
    ds = _results()
    rng = np.random.default_rng(3)
    ds = ds.assign(
        pair_importance=(("pair", "time"), rng.uniform(size=(1, T)).astype(np.float32)),
        pair_importance_class=(("pair", "member", "time"), rng.normal(size=(1, 2, T)).astype(np.float32)),
    ).assign_coords(pair=[0], member=["a", "b"], pair_a=("pair", ["cluster 1"]), pair_b=("pair", ["cluster 3"]))
    make_report(ds, tmp_path / "rep", cube=_cube(ds))
    items = _report_items(tmp_path / "rep")
    assert items["pair_cluster_1_cluster_3"]["file"] == "pair_cluster_1_cluster_3.png"
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "The dates that separate cluster 1 and cluster 3 most:" in page


# --------------------------------------------------------------------------- the work on the Dask workers


def _stores(tmp_path, ds: xr.Dataset, chunks: dict) -> tuple[xr.Dataset, xr.Dataset]:
    """`ds` and its cube written as Zarr stores and opened lazily (Dask-backed, `chunks`)."""
    ds.chunk(chunks).to_zarr(tmp_path / "results.zarr", zarr_format=2)
    _cube(ds).chunk(chunks).to_zarr(tmp_path / "cube.zarr", zarr_format=2)
    return xr.open_zarr(tmp_path / "results.zarr"), xr.open_zarr(tmp_path / "cube.zarr")


def _pixels(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def test_figures_are_drawn_on_the_workers_and_the_page_is_the_same(tmp_path, default_cluster):
    """Under a distributed client every figure is a task on a worker (the task stream shows
    them there), a `FigureSkipped` raised there is a skipped item with its reason, no large
    graph is sent, and the page is the one drawn in-process: the same items, the same PNGs."""
    import warnings

    import dask
    from distributed import get_task_stream

    from slamgeo.reporting.render import RENDER_PREFIX

    results, cube = _stores(tmp_path, _results(), {"y": 10, "x": 12})
    options = dict(
        cube=cube,
        parcels_dir=_parcels_dir(tmp_path / "parcels"),
        class_groups={"confusable": ["cotton", "pepper"], "typo": ["cottn"]},  # "typo" is skipped on a worker
        faithfulness=_curves(0),
        title="test run",
    )
    with dask.config.set(scheduler="sync"):  # the reference: no client, drawn in this process
        make_report(results, tmp_path / "here", **options)
    with warnings.catch_warnings(record=True) as caught, get_task_stream(default_cluster) as stream:
        warnings.simplefilter("always")
        make_report(results, tmp_path / "there", **options)
    assert not [w for w in caught if "large graph" in str(w.message)]
    here, there = _report_items(tmp_path / "here"), _report_items(tmp_path / "there")
    assert there == here  # keys, titles, captions, files and skip reasons, in order
    assert "['cottn'] not found" in there["fig4_class_importance_typo"]["skipped"]
    drawn = [i["file"] for i in there.values() if i["file"]]
    assert len(drawn) == 10
    for name in drawn:
        np.testing.assert_array_equal(_pixels(tmp_path / "there" / name), _pixels(tmp_path / "here" / name))
    workers = set(default_cluster.scheduler_info()["workers"])
    renders = [t for t in stream.data if str(t["key"]).startswith(RENDER_PREFIX)]
    assert len(renders) == len(drawn) + 1  # the skipped "typo" group was drawn there too
    assert {t["worker"] for t in renders} <= workers
    assert len(set((tmp_path / "there" / "index.html").read_text().split("<img ")[1:])) == len(drawn)


def test_map_raster_is_a_lazy_stride_of_the_full_grid():
    """A map's raster is a strided view of the Dask-backed grid with at most `max_side` pixels a
    side (only it is computed), drawn over the full grid's extent; the importance raster is the
    date asked for."""
    from slamgeo.reporting.figures import importance_raster, map_raster

    rng = np.random.default_rng(0)
    ny, nx = 50, 70
    full = xr.DataArray(
        rng.normal(size=(D, ny, nx)).astype(np.float32),
        dims=("dim", "y", "x"),
        coords={"y": 4_110_000 - 10.0 * np.arange(ny) - 5, "x": 230_000 + 10.0 * np.arange(nx) + 5},
    ).chunk({"y": 20, "x": 30})
    thin, view = map_raster(full, 16)
    assert view.step == 5 and view.shape == (ny, nx)  # ceil(70 / 16)
    assert thin.chunks is not None  # still lazy
    np.testing.assert_array_equal(thin.values, full.values[:, ::5, ::5])
    assert thin.shape == (D, 10, 14) and max(thin.shape[1:]) <= 16
    assert view.extent == (230_000.0, 230_700.0, 4_109_500.0, 4_110_000.0) and view.origin == "upper"
    imp = _results()["importance"].chunk({"y": 10, "x": 12})
    thin, view, labels = importance_raster(imp, "2017-01-29", max_side=8)  # acquisitions on 01-27 and 02-08
    assert view.step == 3 and labels["when"] == "2017-01-27" and labels["asked"] == "2017-01-29"
    np.testing.assert_array_equal(thin.values, imp.values[:, 2, ::3, ::3])


def test_reductions_equal_numpy_on_the_full_arrays(default_cluster):
    """The date score and the cluster profiles are Dask reductions on the workers; with every
    block in the sample and no stride (a small store), they equal numpy on the full arrays."""
    from slamgeo.reporting.readers import cluster_profiles, cluster_sums, date_score, most_important_date

    ds = _results(scale="centred").chunk({"y": 10, "x": 12})  # 4 blocks
    cube = _cube(ds).chunk({"y": 10, "x": 12})
    imp, cl, vv = ds["importance"].values, ds["cluster"].values, cube["VV"].values
    score = date_score(ds["importance"])
    assert score.chunks is not None  # lazy until computed
    with np.errstate(invalid="ignore"):
        want = np.nanmean(np.abs(imp).astype(np.float64), axis=(0, 2, 3))
    np.testing.assert_allclose(score.compute(), want, rtol=1e-12)
    assert most_important_date(ds["importance"]) == np.datetime64(TIMES[int(np.argmax(want))], "D")
    assert hasattr(cluster_sums(ds, cube), "dask")  # a Delayed: the sums are taken on the workers
    prof = cluster_profiles(ds, cube, names={0: "maize"})
    ids = np.unique(cl[cl >= 0])
    assert list(prof["class"].values) == [f"cluster {c}" + (": maize" if c == 0 else "") for c in ids]
    mean_imp = np.stack([imp[:, :, cl == c].astype(np.float64).mean(-1) for c in ids])  # (k, dim, time)
    lo, hi = mean_imp.min(-1, keepdims=True), mean_imp.max(-1, keepdims=True)
    np.testing.assert_allclose(prof["importance"].values, (mean_imp - lo) / (hi - lo), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(prof["VV"].values, np.stack([vv[:, cl == c].mean(-1) for c in ids]), rtol=1e-6)
    np.testing.assert_array_equal(prof["n_pixels_sampled"].values, [(cl == c).sum() for c in ids])


def _smooth_store(path, n: int, chunk: int, t: int = 4) -> tuple[xr.Dataset, xr.Dataset]:
    """A gridded results store `n x n` (smooth fields: small PNGs; 8 clusters) and its cube,
    written in `chunk x chunk` chunks without the cluster, opened lazily."""
    import dask

    yy, xx = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    smooth = (np.sin(6 * yy) * np.cos(4 * xx)).astype(np.float32)
    ds = xr.Dataset(
        {
            "embedding": (("dim", "y", "x"), np.stack([smooth, -smooth])),
            "importance": (
                ("dim", "time", "y", "x"),
                np.stack([np.stack([smooth * (k + 1) / t for k in range(t)])] * D),
                {"scale": "none"},
            ),
            "recon_error": (("y", "x"), smooth**2),
            "cluster": (("y", "x"), (4 * (smooth + 1)).astype(np.int16), {"k": 8}),
        },
        coords={"dim": np.arange(D), "time": TIMES[:t], "y": 4e6 - 10.0 * np.arange(n), "x": 2e5 + 10.0 * np.arange(n)},
    )
    cube = xr.Dataset({"VV": (("time", "y", "x"), np.stack([smooth - 12] * t))}, coords=ds[["time", "y", "x"]].coords)
    with dask.config.set(scheduler="sync"):
        ds.chunk({"y": chunk, "x": chunk}).to_zarr(path / "results.zarr", zarr_format=2)
        cube.chunk({"y": chunk, "x": chunk}).to_zarr(path / "cube.zarr", zarr_format=2)
    return xr.open_zarr(path / "results.zarr"), xr.open_zarr(path / "cube.zarr")


def test_the_driver_never_holds_a_full_map(tmp_path):
    """make_report under a client whose scheduler and workers are other processes (`dask
    scheduler`, `dask worker`), so this process is the driver alone: what it allocates at its
    peak (tracemalloc: every Python and numpy allocation, in every thread) does not grow with
    the pixels. A 1024 x 1024 store (one importance date map of both dimensions is 8
    MiB as float32, the importance 32 MiB) peaks less than 2 MiB above a 64 x 64 one cut in as
    many chunks (the same graphs; the PNGs, the page and the graphs are what the peak holds):
    the maps, the samples and the reductions stay on the workers, only PNGs and per-date /
    per-cluster sums come here."""
    import tracemalloc

    import dask
    from distributed import Client
    from helpers import dask_processes

    peaks, pngs = {}, {}
    with (
        dask_processes(tmp_path / "logs", gpu_workers=0, cpu_workers=2) as address,
        Client(address, timeout=60, set_as_default=False) as client,
        dask.config.set(scheduler=client),
    ):
        client.wait_for_workers(2, timeout=120)
        for n in (64, 1024):  # the small one first: the imports it triggers are not counted for the large one
            (tmp_path / str(n)).mkdir()
            results, cube = _smooth_store(tmp_path / str(n), n, n // 4)
            tracemalloc.start()
            try:
                make_report(results, tmp_path / str(n) / "rep", cube=cube)
                peaks[n] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            items = _report_items(tmp_path / str(n) / "rep")
            assert all(items[k]["file"] for k in ("map_cluster", "map_importance", "map_recon_error"))
            assert items["embedding_pixels_cluster"]["file"] and items["cluster_importance_clusters_1_4"]["file"]
            pngs[n] = sum(f.stat().st_size for f in (tmp_path / str(n) / "rep").glob("*.png"))
    one_date_map = D * 1024 * 1024 * 4
    # 2 MiB: a full int16 cluster map at 1024², a quarter of one date's importance map; what
    # grows is the larger maps' PNGs, held as bytes and base64 in the self-contained page
    said = {n: f"peak {peaks[n] / 2**20:.2f} MiB, PNGs {pngs[n] / 2**20:.2f} MiB" for n in peaks}
    assert peaks[1024] - peaks[64] < one_date_map / 4, said
