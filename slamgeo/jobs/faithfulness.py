"""The faithfulness stage: how far the embedding moves when the dates a run's explanation ranks
highest are deleted, on a sample of the scene's pixels (`slamgeo.method.faithfulness`).

`faithfulness(results, cube, model)` draws `DELETION_PIXELS` series from the cube
(`slamgeo.io.sample.sample_series`, the model's bands and gap filling), keeps the complete
ones, and gives the deletion curves of Grad-SLAM at the run's scaling and reference map
(`run_scaling`) for k in `DELETION_KS` dates: what `slamgeo.reporting.figures.fig_deletion_curve`
draws. It writes nothing; `slamgeo.reporting.readers.save_curves` keeps the curves as JSON.

On a distributed cluster (`slamgeo.jobs.runtime.current_client`) the forward passes run on a
worker as one task (`submit_with_model`: the model broadcast to the workers once, the sampled
series sent as an array, the curves returned); the driver holds only the sample. Without one
they run in this process. The task computes what the process would, on the worker's torch
threads (`torch_threads_for_task`): the same numbers up to float rounding of multi-threaded
reductions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack, cast

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


def _with_model(fn: Callable[..., Any], model: TrainedModel, *args: Any) -> Any:
    """Task body: `fn(model, *args)` with the worker's copy of the model, under its lock (one
    torch call on a shared model at a time) and on the worker's torch threads."""
    from slamgeo.jobs.explain import _model_on_device
    from slamgeo.jobs.runtime import torch_threads_for_task

    model, lock = _model_on_device(model, "cpu")
    with lock:
        torch.set_num_threads(torch_threads_for_task())
        return fn(model, *args)


def submit_with_model(client, model_ref, fn: Callable[..., Any], *args: Any):
    """A future of `fn(model, *args)` run on a worker of `client` (`_with_model`).

    model_ref: the model broadcast to the workers (`client.scatter(model, broadcast=True)`);
    numpy arrays among `args` are scattered first, so no task graph carries them. The task's
    key starts with `fn`'s name."""
    args = tuple(client.scatter(a, hash=False) if isinstance(a, np.ndarray) else a for a in args)
    key = f"{fn.__name__.strip('_')}-{uuid.uuid4().hex}"
    return client.submit(_with_model, fn, model_ref, *args, key=key, pure=False)


def deletion_task(
    model: TrainedModel,
    x_db: np.ndarray,
    ks: Sequence[int],
    methods: Sequence[str],
    scale: Scale,
    reference: np.ndarray | None,
) -> dict[str, dict]:
    """`deletion_curves` of complete dB series `x_db` `(N, C, T)` (bands in the model's order),
    standardised by the model; reference: `(D, T)` float32 or None. A pure function of its
    arguments: the faithfulness stage's task on a cluster, its call in-process otherwise."""
    return deletion_curves(
        model.model.encoder,
        torch.from_numpy(model.standardise(x_db)),
        list(ks),
        methods=methods,
        scale=scale,
        reference=None if reference is None else torch.from_numpy(reference),
    )


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
    name -> `k (K,)`, `top (K, D)`, `baseline (K, D)`, `ratio (K, D)`, `embedding_std (D,)`.
    With a distributed client active, the curves are computed on a worker (`deletion_task`)."""
    return start_faithfulness(results, cube, model, n_pixels=n_pixels, seed=seed, ks=ks, methods=methods)()


class FaithfulnessOptions(TypedDict, total=False):
    """`faithfulness`'s options, for `start_faithfulness`: `n_pixels`, `seed`, `ks`, `methods`."""

    n_pixels: int
    seed: int
    ks: Sequence[int]
    methods: Sequence[str]


FAITHFULNESS_DEFAULTS = FaithfulnessOptions(n_pixels=DELETION_PIXELS, seed=0, ks=DELETION_KS, methods=("gradslam",))


def start_faithfulness(
    results: xr.Dataset, cube: xr.Dataset, model: TrainedModel, **options: Unpack[FaithfulnessOptions]
) -> Callable[[], dict[str, dict] | None]:
    """`faithfulness` started (the same options and defaults): the sample drawn, the curves'
    task submitted to a worker when a distributed client is active (computed here otherwise);
    returns a function that waits for the curves. The caller can submit other work in between,
    which the cluster's other workers run beside the curves' task."""
    unknown = sorted(set(options) - set(FaithfulnessOptions.__annotations__))
    if unknown:
        raise TypeError(f"faithfulness: unknown option(s) {unknown}; the options are {list(FAITHFULNESS_DEFAULTS)}")
    given = FaithfulnessOptions(**{**FAITHFULNESS_DEFAULTS, **options})
    n_pixels, seed, ks, methods = given["n_pixels"], given["seed"], given["ks"], given["methods"]
    from slamgeo.jobs.runtime import current_client

    x = sample_series(cube, n_pixels, seed=seed, gap_fill=model.gap_fill, bands=model.bands)
    x = x[~np.isnan(x).any(axis=(1, 2))]
    if x.shape[0] < MIN_SERIES:
        return lambda: None
    scale, ref = run_scaling(results, model, cube)
    args = (x, [k for k in ks if k < x.shape[-1]], tuple(methods), scale, ref)
    client = current_client()
    if client is None:
        curves = deletion_task(model, *args)
        return lambda: curves
    model_ref = client.scatter(model, broadcast=True, hash=False)
    future = submit_with_model(client, model_ref, deletion_task, *args)
    return lambda: cast(dict[str, dict], future.result())


__all__ = [
    "DELETION_KS",
    "DELETION_PIXELS",
    "FAITHFULNESS_DEFAULTS",
    "FaithfulnessOptions",
    "MIN_SERIES",
    "deletion_task",
    "faithfulness",
    "run_scaling",
    "start_faithfulness",
    "submit_with_model",
]
