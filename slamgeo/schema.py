"""The names and defaults that more than one part of slamgeo shares, in one place.

The dimension, variable and attribute names of the cube and of the results store, the names
of a season's outputs and of the marker files that say a folder output is complete, and the
library defaults that the Python functions, the command line and the pipeline configuration
all use. Every module takes these from here, so a name or a default is written once.

This module imports nothing but the standard library: `slamgeo.io.storage` and the
configuration use it without loading xarray, torch or matplotlib.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# --------------------------------------------------------------------------- dimensions

TIME = "time"
Y = "y"
X = "x"
SAMPLE = "sample"  # a table cube: one series per parcel or point
GRID_DIMS: tuple[str, str] = (Y, X)
SAMPLE_DIMS: tuple[str] = (SAMPLE,)
DIM = "dim"  # embedding dimension
CENTRE = "centre"  # k-Means centre
PARCEL = "parcel"
CLASS = "class"

# --------------------------------------------------------------------------- variables

VV = "VV"
VH = "VH"
BANDS: tuple[str, ...] = (VV, VH)  # the cube's bands, dB
EMBEDDING = "embedding"
IMPORTANCE = "importance"
RECON_ERROR = "recon_error"
EXPLAIN_VARIABLES: tuple[str, ...] = (EMBEDDING, IMPORTANCE, RECON_ERROR)  # what explain writes
BLOCK_DONE = "block_done"  # results: 1 where a spatial chunk's explain task wrote its region
CLUSTER = "cluster"
CLUSTER_CENTRE = "cluster_centre"
CLUSTER_SIZE = "cluster_size"
CLUSTER_VARIABLES: tuple[str, ...] = (CLUSTER, CLUSTER_CENTRE, CLUSTER_SIZE)  # what cluster adds
UNASSIGNED = "unassigned"  # the class voted for a cluster no class won; its column in a confusion table
REFERENCE_MAP_ATTR = "reference_map"  # results attribute: the "centred" scaling's reference (D x T)

# --------------------------------------------------------------------------- root attributes

COMPLETE_ATTR = "slamgeo_complete"  # a Zarr store is complete when this is true
KIND_ATTR = "slamgeo_kind"  # the kind of a slamgeo Zarr store: "cube" or "results"

# --------------------------------------------------------------------------- outputs

# a season's folder, `<output>/<season>/`
SCENE_DIR = "scene"
CUBE_STORE = "cube.zarr"
ALIGNED_STORE = "cube_model_dates.zarr"  # the cube resampled onto a reused model's dates
MODEL_DIR = "model"
RESULTS_STORE = "results.zarr"
PARCELS_DIR = "parcels"
REPORT_DIR = "report"
STATE_FILE = "pipeline_state.json"
MANIFESTS_DIR = "manifests"
DRIFT_FILE = "drift.json"  # the season against its model's training season (`slamgeo.pipeline.drift`)

# the file whose presence means a folder output is complete: removed first, written last
MODEL_MARKER = "model.json"  # checkpoint
WEIGHTS_FILE = "model.safetensors"  # checkpoint
PARCELS_MARKER = "metrics.json"  # parcels outputs
REPORT_MARKER = "index.html"  # report
SCENE_MARKER = "scene.json"  # synthetic scene

# --------------------------------------------------------------------------- defaults

CHUNK = 512  # spatial tile of a cube, pixels per side (samples for a table): the cube contract
ZARR_FORMATS: tuple[int, ...] = (2, 3)  # of the stores slamgeo writes
ZARR_FORMAT = 2  # GDAL 3.10 reads format 2 only
# Training: the pipeline's 100 000 pixels, 30 epochs, early stopping (README's benchmark gets its result with 50 000 / 30).
TRAIN_SAMPLE_SIZE = 100_000
TRAIN_MAX_EPOCHS = 30
TRAIN_PATIENCE = 5  # epochs without a better validation loss before training stops
TRAIN_VAL_FRACTION = 0.1
TRAIN_BATCH_SIZE = 1024
TRAIN_LR = 5e-3
EMBED_DIM = 2  # dimensions of the CAE's embedding
TRAIN_MIN_DATES = 8  # the fewest dates a model trains on (any architecture; the default's 3 pooling blocks need 2**3)
KMEANS_K = 16
KMEANS_SAMPLE_SIZE = 100_000  # valid pixels sampled for the k-means++ initialisation
Scale = Literal["minmax", "maxabs", "abs", "centred", "none"]  # the Grad-SLAM scalings
SCALES: tuple[Scale, ...] = get_args(Scale)
GRADSLAM_SCALE: Final = "centred"
GRADSLAM_BATCH_SIZE = 1024  # pixels per forward/backward pass of grad_slam on CPU
EXPLAIN_BATCH_SIZE = 4096  # pixels per grad_slam call in an explain task (one pass on GPU)
REFERENCE_SIZE = 20_000  # pixels drawn for the "centred" scaling's reference map
ImportanceDtype = Literal["float32", "float16"]  # of the stored importance
IMPORTANCE_DTYPES: tuple[ImportanceDtype, ...] = get_args(ImportanceDtype)
IMPORTANCE_DTYPE: Final = "float32"
KMEANS_MAX_ITER = 100  # Lloyd passes at most
KMEANS_TOL = 1e-4  # stop when the squared centre shift is under this times the mean variance
# Parcels: the columns of the parcel table (or sample coordinates), the held-out share, the vote
ID_COLUMN = "parcel_id"  # positive integer parcel ids
CLASS_COLUMN = "crop"  # the reference class
TEST_FRACTION = 0.3  # of each class's parcels, held out for evaluation
VoteUnit = Literal["pixels", "parcels"]  # what votes a cluster into a class
VOTE_UNITS: tuple[VoteUnit, ...] = get_args(VoteUnit)
VOTE: Final = "pixels"
CONFUSED_PAIRS = 3  # the most confused class pairs the pairs stage (and the report) explains
WAIT_FOR_WORKERS = 600.0  # seconds an existing Dask scheduler is given to have a worker for the tasks
MAX_GAP_DAYS = 25  # season alignment: longest gap bridged by interpolation, days
CALENDAR_SHIFT_MAX_DAYS = 180  # synthetic drift: the largest shift of the crops' calendars, days
# Season drift: whether a season that could reuse an earlier season's model retrains instead:
# "auto" when the drift verdict says "retrain", "never", or "always"
Retrain = Literal["auto", "never", "always"]
RETRAIN_MODES: tuple[Retrain, ...] = get_args(Retrain)
RETRAIN: Final = "auto"
DRIFT_VERDICTS: tuple[str, ...] = ("keep", "retrain")  # what `slamgeo.jobs.drift.season_drift` says
DRIFT_SAMPLE_SIZE = 20_000  # valid pixels sampled per season for the drift measures

__all__ = [name for name in dir() if name.isupper()] + ["ImportanceDtype", "Retrain", "Scale", "VoteUnit"]
