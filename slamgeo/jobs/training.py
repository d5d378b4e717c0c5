"""Training on a Dask cluster: the sample is drawn by the workers and the model trained as one
task on one worker (`train_on_cluster`), so the driver only submits and saves.

The task (`_train_task`) opens the cube on the worker, draws the training sample with
`slamgeo.io.sample.sample_series` from inside `distributed.worker_client` (the task leaves its
thread slot while the sample's tasks run on every worker, its own included), then trains with
`slamgeo.method.train.train` on that worker's share of cores (`runtime.torch_threads_for_task`,
unless `threads` is given) and on its device (`device="auto"`: CUDA where the worker sees one).
When the cluster has workers with the Dask resource GPU the task asks for one (`GPU: 1`).
Each epoch the task sends its losses to the driver as a Dask event (`Worker.log_event` on a
topic of its own), which the driver shows as the epoch display of an in-process training
(`slamgeo.progress.progress_bar`).

The task returns the checkpoint as bytes (safetensors weights and the JSON metadata), and the
driver writes it (`slamgeo.method.checkpoint.save_model`): the checkpoint is small (hundreds of
kB), the driver has already claimed the output folder and checked it (`check_writable`), the
workers need no write access to it, and a worker lost mid-task leaves no half-written
checkpoint behind. The same seed on the same kind of device (and the same thread count on CPU)
gives the same weights as `train` run in the driver: the sample does not depend on where its
tasks run, and training is the same code.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slamgeo.errors import ConfigError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS
from slamgeo.jobs.runtime import current_client, gpu_workers, relax_malloc_trim, torch_threads_for_task
from slamgeo.method.checkpoint import TrainedModel, check_writable, finalise_meta, load_model, save_model
from slamgeo.progress import progress_bar
from slamgeo.schema import TRAIN_MAX_EPOCHS

if TYPE_CHECKING:
    from distributed import Client

# `train`'s options that the task passes on as they are (sample_size, lr, ...); `out_dir`,
# `overwrite`, `inputs` and `progress` are the driver's, `sample` is the task's own.
_DRIVER_ONLY = ("out_dir", "overwrite", "inputs", "progress", "sample")


class _EpochEvents:
    """The epoch display of a training task: each epoch's count and losses sent to the driver
    as an event on `topic` (`distributed.Worker.log_event`; `slamgeo.progress.Progress`)."""

    def __init__(self, topic: str) -> None:
        from distributed import get_worker

        self.topic = topic
        self.worker = get_worker()
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**dict(ordered_dict or {}), **kwargs}

    def update(self, n: int = 1) -> None:
        self.worker.log_event(self.topic, {"n": int(n), "postfix": self.postfix})

    def close(self) -> None:
        """Nothing to close: the driver closes its display when the task ends."""


def _train_task(cube: str, options: dict[str, Any], topic: str | None = None) -> tuple[dict, bytes]:
    """On a worker: draw the sample on the cluster, train here; returns the checkpoint's full
    metadata and its safetensors weights. With `topic`, each epoch is sent as an event on it."""
    from distributed import worker_client

    from slamgeo.io.cube import open_cube
    from slamgeo.io.sample import sample_series
    from slamgeo.method.checkpoint import weights_bytes
    from slamgeo.method.train import train
    from slamgeo.schema import TRAIN_SAMPLE_SIZE

    relax_malloc_trim()  # torch's large temporaries are reused, not mmap-ed afresh
    ds = open_cube(cube)
    opts = dict(options)
    with worker_client():  # this thread's slot is lent to the sample's tasks meanwhile
        x = sample_series(
            ds,
            opts.get("sample_size", TRAIN_SAMPLE_SIZE),
            seed=opts.get("seed", 0),
            gap_fill=opts.get("gap_fill", False),
            bands=opts.get("bands", BANDS),
        )
    if opts.get("threads") is None:
        opts["threads"] = torch_threads_for_task()
    shown = _EpochEvents(topic) if topic else False
    tm = train(ds, sample=x, progress=shown, inputs=[cube], **opts)
    return tm.meta, weights_bytes(tm.model)


def train_on_cluster(
    cube: str | Path,
    *,
    client: Client | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
    gpu: bool | None = None,
    progress: bool = False,
    **options: Any,
) -> TrainedModel:
    """Train a CAE on the cube store `cube` (a path or URL the workers can read) as one task on
    one worker of `client` (default: the active distributed client); returns the model, saved
    to `out_dir` by this process when given (replaced only with `overwrite`, never one of
    `inputs`; default `inputs`: `[cube]`).

    `options`: `slamgeo.method.train.train`'s (`sample_size`, `seed`, `device`, `threads`, ...;
    `threads` None: the worker's cores). `gpu`: ask for a worker with the Dask resource GPU
    (None: when the cluster has one, `runtime.gpu_workers`; True with none is refused, as the
    task would wait for one for ever). `progress`: show the task's epochs here as they end.
    Without a distributed client the model is trained here, as `train` does. Errors of the task
    (`InputError`, `ConfigError`) are raised here as they are.
    """
    from slamgeo.io.cube import open_cube
    from slamgeo.method.train import train

    given = [k for k in _DRIVER_ONLY if k in options]
    if given:
        raise ConfigError(f"train_on_cluster: {', '.join(given)} are not options of the task")
    inputs = list(inputs) or [str(cube)]
    client = client if client is not None else current_client()
    if client is None:
        return train(
            open_cube(str(cube)),
            out_dir=out_dir,
            overwrite=overwrite,
            inputs=[str(i) for i in inputs],
            progress=progress,
            **options,
        )
    if out_dir is not None:  # refused here, before minutes of training
        check_writable(out_dir, overwrite=overwrite, inputs=inputs)
    n_gpu = gpu_workers(client)
    if gpu and not n_gpu:
        raise ConfigError("train_on_cluster: gpu=True, but no worker of the cluster has the Dask resource GPU")
    key = f"train-{uuid.uuid4().hex}"
    shown = progress_bar(int(options.get("max_epochs", TRAIN_MAX_EPOCHS)), "train", "epoch", enabled=progress)

    seen = [0]  # epochs shown; events arrive on the client's thread, maybe after the result
    lock = threading.Lock()

    def on_epoch(event: tuple[float, dict]) -> None:
        with lock:
            shown.set_postfix(event[1]["postfix"])
            shown.update(event[1]["n"])
            seen[0] += event[1]["n"]

    if progress:
        client.subscribe_topic(key, on_epoch)
    future = client.submit(
        _train_task,
        str(storage.location(cube)),
        options,
        key if progress else None,
        resources={"GPU": 1} if (n_gpu if gpu is None else gpu) else None,
        pure=False,
        key=key,
    )
    meta: dict | None = None
    try:
        meta, blob = future.result()
    finally:
        future.release()
        if progress:
            client.unsubscribe_topic(key)
        with lock:
            if meta is not None:  # the epochs whose events were still on their way
                shown.update(max(int(meta["training"]["epochs_run"]) - seen[0], 0))
            shown.close()
    return _checkpoint(meta, blob, out_dir=out_dir, overwrite=overwrite, inputs=inputs)


def _checkpoint(
    meta: dict, blob: bytes, *, out_dir: str | Path | None, overwrite: bool, inputs: Sequence[str | Path]
) -> TrainedModel:
    """The model of a task's checkpoint bytes, written to `out_dir` (and read back) when given."""
    from safetensors.torch import load as st_load

    from slamgeo.method.model import CAE, CAEConfig

    model = CAE(CAEConfig.from_dict(meta["architecture"]))
    model.load_state_dict(st_load(blob))
    model.eval()
    if out_dir is not None:
        save_model(model, meta, out_dir, overwrite=overwrite, inputs=inputs)
        return load_model(out_dir)
    full, weights = finalise_meta(model, meta)
    return TrainedModel(model=model, meta=full, checksum=hashlib.sha256(weights).hexdigest())


__all__ = ["train_on_cluster"]
