"""slamgeo: Grad-SLAM explanations of a convolutional autoencoder on Sentinel-1 cubes, with Dask.

The six stages, each taking and returning data (xarray, GeoDataFrames, small result objects):

    cube = slamgeo.load(["scene/tiffs"])                  # lazy cube: VV, VH in dB, (time, y, x)
    model = slamgeo.train(cube, sample_size=20_000)       # a TrainedModel (CAE + its metadata)
    res = slamgeo.explain(cube, model)                    # lazy: embedding, importance, recon_error
    res = slamgeo.cluster(res.persist(), k=16)            # + cluster, cluster_centre, cluster_size
    par = slamgeo.parcels(res, cube, "scene/parcels.gpkg")  # per parcel, per class, the metrics
    slamgeo.report(res, par, "report", cube=cube, model=model)  # PNG figures and index.html

Two more stages give what the report draws besides: `pairs(res, par, cube=cube, model=model)`
(+ the contrastive importance of the most confused class pairs) and `faithfulness(res, cube,
model)` (deletion curves); `report` computes both when given the model.

Each that writes has a twin that writes to storage resumably: `ingest`, `train(...,
out_dir=...)`, `explain_store`, `cluster_store`, `parcels_store`, `pairs_store` (and `report`
writes its folder). The layers below: `slamgeo.io` (storage, contracts, readers), `slamgeo.synth`
(the synthetic scene and archive), `slamgeo.method` (model, training, Grad-SLAM, attributions),
`slamgeo.jobs` (the Dask jobs), `slamgeo.reporting` (figures and page), `slamgeo.pipeline` (the
season pipeline) and `slamgeo.cli`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from slamgeo._version import __version__

# name -> module; imported on first use, so that `import slamgeo` (and the command line) stays
# light: torch, Dask and matplotlib load only with the stage that needs them.
_STAGES = {
    "load": "slamgeo.io.ingest",
    "ingest": "slamgeo.io.ingest",
    "train": "slamgeo.method.train",
    "explain": "slamgeo.jobs.explain",
    "explain_store": "slamgeo.jobs.explain",
    "cluster": "slamgeo.jobs.cluster",
    "cluster_store": "slamgeo.jobs.cluster",
    "parcels": "slamgeo.jobs.parcels",
    "parcels_store": "slamgeo.jobs.parcels",
    "pairs": "slamgeo.jobs.pairs",
    "pairs_store": "slamgeo.jobs.pairs",
    "faithfulness": "slamgeo.jobs.faithfulness",
    "report": "slamgeo.reporting.page",
}

if TYPE_CHECKING:
    from slamgeo.io.ingest import ingest as ingest
    from slamgeo.io.ingest import load as load
    from slamgeo.jobs.cluster import cluster as cluster
    from slamgeo.jobs.cluster import cluster_store as cluster_store
    from slamgeo.jobs.explain import explain as explain
    from slamgeo.jobs.explain import explain_store as explain_store
    from slamgeo.jobs.faithfulness import faithfulness as faithfulness
    from slamgeo.jobs.pairs import pairs as pairs
    from slamgeo.jobs.pairs import pairs_store as pairs_store
    from slamgeo.jobs.parcels import parcels as parcels
    from slamgeo.jobs.parcels import parcels_store as parcels_store
    from slamgeo.method.train import train as train
    from slamgeo.reporting.page import report as report


def __getattr__(name: str) -> Any:
    if name in _STAGES:
        return getattr(import_module(_STAGES[name]), name)
    raise AttributeError(f"module 'slamgeo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_STAGES])


__all__ = ["__version__", *_STAGES]
