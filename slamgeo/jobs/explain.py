"""Explain a whole region: encode every pixel and compute its Grad-SLAM importance, per chunk.

Three layers, from the inside out:

- `explain_array(model, x_db)`: pure NumPy/torch on one batch of pixels `(N, C, T)` dB ->
  embedding `(N, D)`, importance `(N, D, T)`, reconstruction error `(N,)`. Pixels with no
  data (any NaN after the optional gap filling) come out NaN and never enter the network.
- `explain(cube, model)`: the same, lazily, over a Dask-backed cube with
  `dask.array.map_blocks` (one task per spatial chunk, the whole time axis inside); returns an
  xarray Dataset, for notebooks.
- `explain_store(cube_path, model_dir, out)`: the Zarr-to-Zarr batch job on a distributed cluster.
  Each task computes one spatial chunk and writes its region of the output store itself, then
  ticks that block in `block_done`; a killed run started again computes only the blocks not
  ticked, and a worker lost mid-run has its blocks recomputed whole. Output chunks equal the
  cube's spatial chunks, so no two tasks ever write one Zarr chunk (xarray issue 8371).

On a distributed cluster the model is broadcast to every worker once (`client.scatter`), so no
task graph carries its weights; without one it is one `dask.delayed` object in the graph. All
tasks of a worker share it (a per-process lock serialises torch calls, because Grad-SLAM hooks
on shared modules are not thread-safe).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time as _time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import dask
import dask.array as da
import numpy as np
import torch
import xarray as xr
import zarr

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import COMPLETE_ATTR, check_zarr_format, open_cube, open_results, spatial_dims
from slamgeo.io.provenance import dataset_fingerprint, fingerprint, versions
from slamgeo.io.series import fill_gaps, valid_mask
from slamgeo.method.checkpoint import TrainedModel, load_model
from slamgeo.method.gradslam import GradSlamOutput, grad_slam, reference_map
from slamgeo.schema import (
    BLOCK_DONE,
    EXPLAIN_BATCH_SIZE,
    GRADSLAM_BATCH_SIZE,
    GRADSLAM_SCALE,
    IMPORTANCE_DTYPE,
    IMPORTANCE_DTYPES,
    REFERENCE_MAP_ATTR,
    REFERENCE_SIZE,
    SCALES,
    ZARR_FORMAT,
    ImportanceDtype,
    Scale,
)


@dataclass(frozen=True)
class ExplainOptions:
    """What to compute; recorded in the results' attributes and checked on resume."""

    layers: tuple[str, ...] | None = None  # encoder block names; None = all conv blocks
    scale: str = GRADSLAM_SCALE
    batch_size: int = EXPLAIN_BATCH_SIZE  # pixels per grad_slam call
    importance_dtype: ImportanceDtype = IMPORTANCE_DTYPE
    reference_size: int = REFERENCE_SIZE  # pixels drawn for the "centred" scaling's reference map
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when the worker has it, else CPU

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise InputError(f"scale must be one of {', '.join(SCALES)}, found {self.scale!r}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.importance_dtype not in IMPORTANCE_DTYPES:
            raise InputError(
                f"importance dtype must be {' or '.join(IMPORTANCE_DTYPES)}, got {self.importance_dtype!r}"
            )


# --------------------------------------------------------------------------- pixels


def unknown_layers(model: TrainedModel, layers: Sequence[str] | None) -> list[str]:
    """The names in `layers` that are not blocks of the model's encoder (None: all blocks)."""
    return [n for n in (layers or ()) if n not in model.model.encoder.blocks]


def _resolve_layers(model: TrainedModel, layers: Sequence[str] | None) -> list[torch.nn.Module]:
    blocks = model.model.encoder.blocks
    names = list(layers) if layers else list(blocks)
    unknown = unknown_layers(model, names)
    if unknown:
        raise InputError(f"unknown encoder layer(s) {', '.join(unknown)}; the encoder has {', '.join(blocks)}")
    return [blocks[n] for n in names]


def _device_for(model: TrainedModel, device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def explain_array(
    model: TrainedModel,
    x_db: np.ndarray,
    *,
    options: ExplainOptions | None = None,
    reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode and explain pixels.

    x_db: `(N, C, T)` backscatter in dB, bands in the model's order, NaN = no data.
    Returns embedding `(N, D)` float32, importance `(N, D, T)` (options' dtype) and the
    reconstruction error `(N,)` float32 (mean squared error over bands and dates, in
    standardised units, the model's training loss). Rows without data are NaN.
    """
    opts = options or ExplainOptions()
    x_db = np.asarray(x_db, dtype=np.float32)
    if x_db.ndim != 3:
        raise InputError(f"expected pixels (N, C, T), got shape {x_db.shape}")
    n, _, t = x_db.shape
    d = model.model.cfg.embed_dim
    emb = np.full((n, d), np.nan, np.float32)
    imp = np.full((n, d, t), np.nan, np.dtype(opts.importance_dtype))
    err = np.full((n,), np.nan, np.float32)
    if model.gap_fill:
        x_db = fill_gaps(x_db)
    ok = valid_mask(x_db)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return emb, imp, err
    device = _device_for(model, opts.device)
    net = model.model
    layers = _resolve_layers(model, opts.layers)
    ref = None if reference is None else torch.as_tensor(reference, dtype=torch.float32, device=device)
    for start in range(0, idx.size, opts.batch_size):
        rows = idx[start : start + opts.batch_size]
        xs = torch.from_numpy(model.standardise(x_db[rows])).to(device)
        out = grad_slam(
            net.encoder,
            xs,
            layers,
            scale=cast(Scale, opts.scale),  # checked by grad_slam
            reference=ref,
            return_embedding=True,
            batch_size=_batch_size(opts, device),
        )
        assert isinstance(out, GradSlamOutput)  # return_embedding=True
        with torch.no_grad():
            recon = net.decoder(out.embedding.to(device))
            e2 = ((recon - xs) ** 2).mean(dim=(1, 2))
        emb[rows] = out.embedding.detach().cpu().numpy()
        imp[rows] = out.importance.detach().cpu().numpy().astype(imp.dtype, copy=False)
        err[rows] = e2.cpu().numpy()
    return emb, imp, err


def scene_reference(
    model: TrainedModel,
    cube: xr.Dataset,
    options: ExplainOptions,
    *,
    client=None,
    gpu_resources: bool = False,
) -> np.ndarray | None:
    """The reference map `(D, T)` for the "centred" scaling (None for the other scalings):
    Grad-SLAM's mean raw map over a random sample of the cube's valid pixels.

    The sample is read and its raw maps summed by Dask tasks (on `client`, else the default
    scheduler): parts of `REFERENCE_PART` pixels, each summed in float64 on a worker, added
    up here in a fixed order, so the result does not depend on where the parts ran.
    """
    if options.scale != "centred":
        return None
    from slamgeo.io.sample import sample_series

    on = dask.config.set(scheduler=client) if client is not None else contextlib.nullcontext()
    with on:
        x = sample_series(cube, options.reference_size, seed=options.seed, gap_fill=model.gap_fill, bands=model.bands)
        x = x[valid_mask(x)]
        if x.shape[0] == 0:
            raise InputError("no valid pixel in the cube to build the 'centred' reference map from")
        client = _distributed_client(client)
        model_d = _model_ref(model, client)
        chunks = [x[i : i + REFERENCE_PART] for i in range(0, x.shape[0], REFERENCE_PART)]
        if client is not None:  # the sample goes to the workers as data, not inside the task graph
            chunks = client.scatter(chunks)
        with dask.annotate(**({"resources": {"GPU": 1}} if gpu_resources else {})):
            parts = [dask.delayed(_reference_sum, pure=True)(model_d, chunk, options) for chunk in chunks]
        sums = dask.compute(*parts, optimize_graph=not gpu_resources)  # optimisation drops annotations
    return (np.sum(np.stack(sums), axis=0) / x.shape[0]).astype(np.float32)


REFERENCE_PART = 2048  # pixels per reference-map task


def _reference_sum(model: TrainedModel, x_db: np.ndarray, options: ExplainOptions) -> np.ndarray:
    """Dask task: the sum over pixels `(N, C, T)` dB (all valid) of the raw merged map, `(D, T)` float64."""
    from slamgeo.jobs.runtime import torch_threads_for_task

    model, lock = _model_on_device(model, options.device)
    device = _device_for(model, options.device)
    with lock:
        torch.set_num_threads(torch_threads_for_task())
        xs = torch.from_numpy(model.standardise(x_db)).to(device)
        mean = reference_map(
            model.model.encoder, xs, _resolve_layers(model, options.layers), batch_size=_batch_size(options, device)
        )
    return mean.double().cpu().numpy() * x_db.shape[0]


def _batch_size(options: ExplainOptions, device: torch.device) -> int:
    """Pixels per forward/backward pass inside `grad_slam`: the options' batch on a GPU; on a
    CPU Grad-SLAM's default (1,024), which keeps the activations in cache and measured faster."""
    return options.batch_size if device.type == "cuda" else GRADSLAM_BATCH_SIZE


# --------------------------------------------------------------------------- one block

# One lock per model checksum and process: torch calls on one shared model are serialised.
_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_MODELS: dict[tuple[str, str], TrainedModel] = {}


def _model_on_device(model: TrainedModel, device: str) -> tuple[TrainedModel, threading.Lock]:
    """The worker's copy of the model on its device (moved once per process), and its lock.
    Also undoes distributed's small malloc trim threshold in this process (`relax_malloc_trim`)."""
    from slamgeo.jobs.runtime import relax_malloc_trim

    relax_malloc_trim()
    dev = str(_device_for(model, device))
    key = (model.checksum, dev)
    lock = _LOCKS.setdefault(model.checksum, threading.Lock())
    if key not in _DEVICE_MODELS:
        with lock:
            if key not in _DEVICE_MODELS:
                _DEVICE_MODELS[key] = model if dev == "cpu" else model.to(dev)
    return _DEVICE_MODELS[key], lock


def _block_pixels(bands: Sequence[np.ndarray]) -> np.ndarray:
    """Band blocks `(T, *S)` -> pixels `(prod(S), C, T)`."""
    stacked = np.stack([np.asarray(b, dtype=np.float32) for b in bands], axis=0)  # (C, T, *S)
    c, t = stacked.shape[:2]
    return np.ascontiguousarray(stacked.reshape(c, t, -1).transpose(2, 0, 1))


def _explain_block_arrays(
    bands: Sequence[np.ndarray], model: TrainedModel, options: ExplainOptions, reference
) -> dict[str, np.ndarray]:
    """Band blocks `(T, *S)` -> {"embedding": (D, *S), "importance": (D, T, *S), "recon_error": S}."""
    from slamgeo.jobs.runtime import torch_threads_for_task

    shape = np.shape(bands[0])[1:]
    model, lock = _model_on_device(model, options.device)
    with lock:
        torch.set_num_threads(torch_threads_for_task())
        emb, imp, err = explain_array(model, _block_pixels(bands), options=options, reference=reference)
    d, t = imp.shape[1:]
    return {
        "embedding": emb.T.reshape(d, *shape),
        "importance": np.moveaxis(imp, 0, -1).reshape(d, t, *shape),
        "recon_error": err.reshape(shape),
    }


def _stack_outputs(parts: dict[str, np.ndarray]) -> np.ndarray:
    """Pack the three outputs of a block into one float32 array `(D + D*T + 1, *S)`."""
    imp = parts["importance"]
    shape = imp.shape[2:]
    return np.concatenate(
        [parts["embedding"], imp.astype(np.float32).reshape(-1, *shape), parts["recon_error"][None]], axis=0
    )


# --------------------------------------------------------------------------- lazy xarray API


def explain(
    cube: xr.Dataset,
    model: TrainedModel,
    *,
    options: ExplainOptions | None = None,
    reference: np.ndarray | None = None,
) -> xr.Dataset:
    """Lazy results for a (Dask-backed) cube: one `map_blocks` task per spatial chunk.

    Returns `embedding (dim, *S)`, `importance (dim, time, *S)`, `recon_error (*S)` with the
    cube's coordinates (S = (y, x) or (sample,)).
    """
    opts = options or ExplainOptions()
    model.check_cube(cube)
    if opts.scale == "centred" and reference is None:
        reference = scene_reference(model, cube, opts)
    sdims = spatial_dims(cube)
    cube = cube.chunk({"time": -1})
    arrays = [cube[b].data for b in model.bands]
    d, t = model.model.cfg.embed_dim, cube.sizes["time"]
    k = d + d * t + 1
    model_d = dask.delayed(model, name=f"slamgeo-model-{model.checksum}")

    def block(*bands, model, reference):
        return _stack_outputs(_explain_block_arrays(bands, model, opts, reference))

    stacked = da.map_blocks(
        block,
        *arrays,
        model=model_d,
        reference=reference,
        chunks=((k,), *arrays[0].chunks[1:]),
        dtype=np.float32,
        name=f"slamgeo-explain-{model.checksum[:8]}",
    )
    shape_s = stacked.shape[1:]
    emb = stacked[:d]
    imp = stacked[d : d + d * t].reshape((d, t, *shape_s)).rechunk((d, t, *arrays[0].chunks[1:]))
    err = stacked[-1]
    coords = _coords(cube, sdims)
    ds = xr.Dataset(
        {
            "embedding": (("dim", *sdims), emb),
            "importance": (("dim", "time", *sdims), imp.astype(opts.importance_dtype)),
            "recon_error": (sdims, err),
        },
        coords={**coords, "dim": np.arange(d)},
    )
    return _describe(ds, model, opts)


def _describe(ds: xr.Dataset, model: TrainedModel, opts: ExplainOptions) -> xr.Dataset:
    ds["embedding"].attrs.update(long_name="CAE embedding", units="1")
    ds["importance"].attrs.update(
        long_name="Grad-SLAM date importance",
        units="1",
        scale=opts.scale,
        layers=",".join(opts.layers or list(model.model.encoder.blocks)),
    )
    ds["recon_error"].attrs.update(long_name="reconstruction mean squared error", units="standardised units squared")
    return ds


# --------------------------------------------------------------------------- Zarr-to-Zarr job


@dataclass
class ExplainReport:
    """What a run did: blocks computed now, blocks found done, the valid pixels explained in the
    whole store (those of a resumed run's earlier blocks included), seconds."""

    out: str
    blocks_total: int
    blocks_computed: int
    blocks_skipped: int
    valid_pixels: int
    seconds: float
    attrs: dict = field(default_factory=dict)


def _block_grid(chunks: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(len(c)) for c in chunks)))


def _region(chunks: Sequence[tuple[int, ...]], block: tuple[int, ...], sdims: Sequence[str]) -> dict[str, slice]:
    region = {}
    for dim, c, i in zip(sdims, chunks, block):
        start = int(sum(c[:i]))
        region[dim] = slice(start, start + c[i])
    return region


def _write_block(
    *bands: np.ndarray,
    model: TrainedModel,
    reference,
    options: ExplainOptions,
    store: str,
    sdims: tuple[str, ...],
    block_info=None,
) -> np.ndarray:
    """map_blocks task: explain one chunk, write its region of `store`, tick `block_done`.
    Returns the number of valid pixels as a `(1,)*len(S)` array."""
    loc = block_info[0]["array-location"][1:]
    idx = block_info[0]["chunk-location"][1:]
    parts = _explain_block_arrays(bands, model, options, reference)
    region = {dim: slice(a, b) for dim, (a, b) in zip(sdims, loc)}
    ds = xr.Dataset(
        {
            "embedding": (("dim", *sdims), parts["embedding"]),
            "importance": (("dim", "time", *sdims), parts["importance"]),
            "recon_error": (sdims, parts["recon_error"]),
        }
    )
    ds.to_zarr(store, region=region, mode="r+")
    zarr.open_array(store, path=BLOCK_DONE, mode="r+")[idx] = 1
    n_valid = int(np.isfinite(parts["recon_error"]).sum())
    return np.full((1,) * len(sdims), n_valid, dtype=np.int64)


def _spatial_chunks(cube: xr.Dataset, model: TrainedModel, sdims) -> list[tuple[int, ...]]:
    """The spatial chunks of the band variables (coordinates may be chunked otherwise)."""
    band = cube[model.bands[0]].variable
    return [band.chunksizes[dim] for dim in sdims]


def _coords(cube: xr.Dataset, sdims) -> dict:
    """The cube's coordinates along time and space, loaded (label coordinates of a table cube
    may be Dask arrays; a deferred write would never store them)."""
    out = {}
    for name, c in cube.coords.items():
        if set(c.dims) <= {"time", *sdims}:
            out[name] = c.load()
    return out


def _strings_as_objects(ds: xr.Dataset) -> xr.Dataset:
    """String coordinates (a table cube's labels) as Python-object strings with no inherited
    encoding: the form xarray writes as variable-length strings in Zarr 2 and 3."""
    # "U": NumPy fixed width; "T": NumPy's StringDType, what Zarr 3 reads vlen-utf8 strings as
    strings = {k: c.astype(object) for k, c in ds.coords.items() if c.dtype.kind in "UT"}
    ds = ds.assign_coords(strings)
    for k in strings:
        ds[k].encoding = {}
    return ds


def _template(cube: xr.Dataset, model: TrainedModel, opts: ExplainOptions, attrs: dict) -> xr.Dataset:
    sdims = spatial_dims(cube)
    schunks = _spatial_chunks(cube, model, sdims)
    d, t = model.model.cfg.embed_dim, cube.sizes["time"]
    shp = tuple(cube.sizes[dim] for dim in sdims)
    chunk1 = tuple(c[0] for c in schunks)
    coords = _coords(cube, sdims)
    nblocks = tuple(len(c) for c in schunks)
    ds = xr.Dataset(
        {
            "embedding": (("dim", *sdims), da.full((d, *shp), np.nan, dtype=np.float32, chunks=(d, *chunk1))),
            "importance": (
                ("dim", "time", *sdims),
                da.full((d, t, *shp), np.nan, dtype=opts.importance_dtype, chunks=(d, t, *chunk1)),
            ),
            "recon_error": (sdims, da.full(shp, np.nan, dtype=np.float32, chunks=chunk1)),
            BLOCK_DONE: (tuple(f"block_{s}" for s in sdims), np.zeros(nblocks, np.uint8)),
        },
        coords={**coords, "dim": np.arange(d)},
        attrs=attrs,
    )
    ds[BLOCK_DONE].attrs["long_name"] = "1 where the explain task of that spatial chunk has written its region"
    ds = _describe(ds, model, opts)
    ds[BLOCK_DONE].encoding["chunks"] = (1,) * len(sdims)
    for name in coords:  # the cube's codecs are of its Zarr format; the results' format decides
        for key in _CODEC_KEYS:
            ds[name].encoding.pop(key, None)
    return _strings_as_objects(ds)


_CODEC_KEYS = ("compressor", "compressors", "filters", "serializer", "shards")


def explain_store(
    cube_path: str | Path,
    model_dir: str | Path,
    out: str | Path,
    *,
    options: ExplainOptions | None = None,
    client=None,
    overwrite: bool = False,
    gpu_resources: bool = False,
    zarr_format: int = ZARR_FORMAT,
    progress: bool = True,
) -> ExplainReport:
    """Explain every pixel of a cube store into a results store, resumably.

    `client`: a `distributed.Client` (None: the caller's default scheduler, for example an
    active client, else Dask's local threads). `gpu_resources`: restrict the tasks to workers
    started with `--resources GPU=1`. A results store left by an interrupted run with the same
    inputs and options is completed; one with other inputs or options is refused unless
    `overwrite`. The input cube is only read.
    """
    t0 = _time.perf_counter()
    opts = options or ExplainOptions()
    check_zarr_format(zarr_format, error=InputError)
    cube_path, out = str(cube_path), str(out)
    if storage.same_location(cube_path, out):  # any spelling: file:// URL, link, ./, trailing slash
        raise InputError(f"{out}: the results store must not be the input cube")
    cube = open_cube(cube_path)
    model = load_model(model_dir)
    model.check_cube(cube)  # refuse before any work starts
    _resolve_layers(model, opts.layers)  # unknown layers: before the output is touched
    sdims = spatial_dims(cube)
    cube = cube.chunk({"time": -1})
    schunks = _spatial_chunks(cube, model, sdims)
    run_attrs = {
        "slamgeo_version": versions()["slamgeo"],
        "model_checksum": model.checksum,
        "model_dir": str(model_dir),
        "input": cube_path,
        "input_fingerprint": dataset_fingerprint(cube),
        "options": fingerprint(asdict(opts)),
        "layers": ",".join(opts.layers or list(model.model.encoder.blocks)),
        "scale": opts.scale,
        "importance_dtype": opts.importance_dtype,
        "gap_fill": "gap-filled (linear in time)" if model.gap_fill else "pixels with any missing date are NaN",
        "dates": ",".join(str(v)[:10] for v in cube["time"].values),
        "chunks": str(tuple(c[0] for c in schunks)),
    }
    expected = {k: run_attrs[k] for k in ("model_checksum", "input_fingerprint", "options", "chunks")}

    # a results store of this run is resumed; anything that is not slamgeo's results is refused
    state = storage.claim_output(
        out, storage.RESULTS, overwrite=overwrite, inputs=[cube_path, str(model_dir)], resume=True
    )
    if state == "own" and not overwrite:
        have = xr.open_zarr(out, decode_coords="all").attrs
        differs = {k: (have.get(k), v) for k, v in expected.items() if have.get(k) != v}
        if differs:
            detail = "; ".join(f"{k}: store has {a!r}, this run {b!r}" for k, (a, b) in differs.items())
            raise InputError(f"{out}: results of another run are there ({detail}); use overwrite to replace them")
        reference = np.asarray(have[REFERENCE_MAP_ATTR], np.float32) if REFERENCE_MAP_ATTR in have else None
        done = np.asarray(zarr.open_array(out, path=BLOCK_DONE, mode="r")[...]).astype(bool)
    else:
        if state == "own":
            storage.remove(out)
        reference = scene_reference(model, cube, opts, client=client, gpu_resources=gpu_resources)
        attrs = dict(run_attrs, **{COMPLETE_ATTR: False}, **storage.stamp_attrs(storage.RESULTS))
        if reference is not None:
            attrs[REFERENCE_MAP_ATTR] = reference.tolist()
        _template(cube, model, opts, attrs).to_zarr(out, mode="w", compute=False, zarr_format=zarr_format)
        done = np.zeros(tuple(len(c) for c in schunks), bool)

    blocks = _block_grid(schunks)
    todo = [b for b in blocks if not done[b]]
    client = _distributed_client(client)
    model_d = _model_ref(model, client)
    arrays = [cube[b].data for b in model.bands]
    # Annotations are attached when the graph is built; compute then skips optimisation,
    # which would drop them (dask issue 7036).
    with dask.annotate(**({"resources": {"GPU": 1}} if gpu_resources else {})):
        status = da.map_blocks(
            _write_block,
            *arrays,
            model=model_d,
            reference=reference,
            options=opts,
            store=out,
            sdims=sdims,
            drop_axis=0,
            chunks=tuple((1,) * len(c) for c in schunks),
            dtype=np.int64,
            name=f"slamgeo-explain-write-{run_attrs['options']}-{model.checksum[:8]}",
        )
    pieces = [status.blocks[b] for b in todo]
    valid = 0
    if pieces:
        valid = _run(
            pieces,
            client=client,
            gpu_resources=gpu_resources,
            progress=progress,
            total=len(blocks),
            done=len(blocks) - len(todo),
        )

    final = np.asarray(zarr.open_array(out, path=BLOCK_DONE, mode="r")[...]).astype(bool)
    if not final.all():
        raise InputError(f"{out}: {int((~final).sum())} block(s) were not written; run again to resume")
    if len(todo) < len(blocks):  # resumed: count the pixels of the blocks written before too
        valid = int(np.isfinite(xr.open_zarr(out)["recon_error"].data).sum().compute(scheduler="threads"))
    group = zarr.open_group(out, mode="r+")
    group.attrs[COMPLETE_ATTR] = True
    zarr.consolidate_metadata(out)
    return ExplainReport(
        out=out,
        blocks_total=len(blocks),
        blocks_computed=len(todo),
        blocks_skipped=len(blocks) - len(todo),
        valid_pixels=valid,
        seconds=_time.perf_counter() - t0,
        attrs=run_attrs,
    )


def _distributed_client(client=None):
    """`client`, else the distributed client Dask would compute on (`runtime.current_client`)."""
    from slamgeo.jobs.runtime import current_client

    return client if client is not None else current_client()


def _model_ref(model: TrainedModel, client):
    """The model as tasks see it: on a distributed cluster a future of the model broadcast to
    every worker once (so no task graph carries its weights), else one `dask.delayed` object."""
    if client is not None:
        return client.scatter(model, broadcast=True, hash=False)
    return dask.delayed(model, name=f"slamgeo-model-{model.checksum}")


def _run(pieces, *, client, gpu_resources: bool, progress: bool, total: int, done: int) -> int:
    """Compute the block tasks, with one progress display (`slamgeo.progress.progress_bar`: a bar on a
    terminal, plain lines in a log); returns the number of valid pixels."""
    from slamgeo.progress import progress_bar

    bar = progress_bar(total, "explain", "block", enabled=progress, initial=done)
    valid = 0
    try:
        if client is None:  # the scheduler Dask would use: a default distributed client, or local
            from dask.base import get_scheduler
            from distributed import Client

            owner = getattr(get_scheduler(collections=pieces), "__self__", None)
            client = owner if isinstance(owner, Client) else None
        if client is None:
            for p in pieces:
                valid += int(np.asarray(p.compute()).sum())
                bar.update(1)
            return valid
        from distributed import as_completed

        futures = client.compute(pieces, optimize_graph=not gpu_resources)
        for fut in as_completed(futures, loop=client.loop):  # the client need not be the default one
            valid += int(np.asarray(fut.result()).sum())
            bar.update(1)
        return valid
    finally:
        bar.close()


__all__ = [
    "ExplainOptions",
    "ExplainReport",
    "explain",
    "explain_array",
    "explain_store",
    "open_results",
    "scene_reference",
    "unknown_layers",
]
