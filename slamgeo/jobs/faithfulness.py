"""The faithfulness stage: how far the embedding moves when the dates a run's explanation ranks
highest are deleted, on a sample of the scene's pixels (`slamgeo.method.faithfulness`).

`faithfulness(results, cube, model)` draws `DELETION_PIXELS` series from the cube
(`slamgeo.io.sample.sample_series`, the model's bands and gap filling), keeps the complete
ones, and gives the deletion curves of Grad-SLAM at the run's scaling and reference map
(`run_scaling`) for k in `DELETION_KS` dates: what `slamgeo.reporting.figures.fig_deletion_curve`
draws. It writes nothing; `slamgeo.reporting.readers.save_curves` keeps the curves as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
import xarray as xr

from slamgeo.io.sample import sample_series
from slamgeo.jobs.explain import ExplainOptions, scene_reference
from slamgeo.method.checkpoint import TrainedModel
from slamgeo.method.faithfulness import deletion_curves
from slamgeo.schema import GRADSLAM_SCALE, REFERENCE_MAP_ATTR, Scale

DELETION_PIXELS = 1000  # series drawn from the cube
DELETION_KS = (1, 2, 4, 8, 16)  # dates deleted (those below the number of dates)
MIN_SERIES = 10  # fewer complete series than this: no curves
SCALE_ATTR = "scale"  # results attribute (and the importance's): the run's Grad-SLAM scaling


def run_scaling(results: xr.Dataset, model: TrainedModel, cube: xr.Dataset) -> tuple[Scale, np.ndarray | None]:
    """The Grad-SLAM scaling of the run that made `results` and its reference map `(D, T)`
    float32 (None for a scaling without one).

    A results store says both (its `scale` and `reference_map` attributes, `explain_store`).
    Results of the in-memory `explain` carry the scaling on `importance` and no map: for
    "centred" the map is computed again as `explain` does (`scene_reference` of `cube` with the
    default options)."""
    scale = results.attrs.get(SCALE_ATTR)
    if scale is None and "importance" in results:
        scale = results["importance"].attrs.get(SCALE_ATTR)
    scale = cast(Scale, str(scale or GRADSLAM_SCALE))
    ref = results.attrs.get(REFERENCE_MAP_ATTR)
    if ref is not None:
        return scale, np.asarray(ref, np.float32)
    if scale == "centred":
        return scale, scene_reference(model, cube, ExplainOptions(scale=scale))
    return scale, None


def faithfulness(
    results: xr.Dataset,
    cube: xr.Dataset,
    model: TrainedModel,
    *,
    n_pixels: int = DELETION_PIXELS,
    seed: int = 0,
    ks: Sequence[int] = DELETION_KS,
    methods: Sequence[str] = ("gradslam",),
) -> dict[str, dict] | None:
    """Deletion curves of a run's explanations on a sample of the scene, or None when fewer
    than `MIN_SERIES` of the `n_pixels` series drawn (`seed`) are complete.

    results: the run's results (for its scaling and reference map, `run_scaling`); cube: the
    cube it explained (dB, the model's dates); model: its trained model. `ks`: numbers of dates
    deleted, those below the number of dates kept; `methods`: keys of
    `slamgeo.method.faithfulness.ATTRIBUTIONS`. Returns `deletion_curves`' dict: explanation
    name -> `k (K,)`, `top (K, D)`, `baseline (K, D)`, `ratio (K, D)`, `embedding_std (D,)`."""
    x = sample_series(cube, n_pixels, seed=seed, gap_fill=model.gap_fill, bands=model.bands)
    x = x[~np.isnan(x).any(axis=(1, 2))]
    if x.shape[0] < MIN_SERIES:
        return None
    scale, ref = run_scaling(results, model, cube)
    return deletion_curves(
        model.model.encoder,
        torch.from_numpy(model.standardise(x)),
        [k for k in ks if k < x.shape[-1]],
        methods=methods,
        scale=scale,
        reference=None if ref is None else torch.from_numpy(ref),
    )


__all__ = ["DELETION_KS", "DELETION_PIXELS", "MIN_SERIES", "faithfulness", "run_scaling"]
