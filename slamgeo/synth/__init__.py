"""A synthetic Sentinel-1 scene that behaves like the real thing, with its ground truth.

`make_scene` draws a scene in memory (a contract cube plus the answer: parcels, classes and
per-parcel phenology); `write_scene` writes it the way real products arrive (one GeoTIFF per
date, a STAC ItemCollection, a GeoPackage of parcels), so the ingest stage is tested on files.
`write_archive` writes it as a Sentinel-1 archive in Planetary Computer's `sentinel-1-rtc`
conventions instead (float32 linear power COGs per asset, passes cut in two overlapping slices
in two UTM zones, a few descending passes), for the odc-stac loader; `grid_parcels` tiles the
scene with any number of rectangular parcels, for benchmarks.

The modules: `crops` (the classes, their calendars and canopies as a table), `parcels` (the
grid, the swath edge, the parcels; `grid_parcels`), `phenology` (event days, biomass and the
noise-free backscatter), `scene` (`make_scene`: dates, texture, speckle, the cube and its
truth), `writers` (`write_scene`) and `archive` (`write_archive`). The layout and the schema
of a scene folder's `scene.json`, which ingest reads back, are `slamgeo.io.scene`.

The model, in the order it is drawn (every random draw comes from its own stream of
`numpy.random.SeedSequence(seed)`, so for one seed the parcels do not change with the dates,
and the speckle does not change with the rain):

Grid. UTM zone 30N (EPSG:32630), 10 m pixels, `size` x `size`, top-left corner at
(230 000 E, 4 110 000 N): the irrigated plain of the lower Guadalquivir, south of Seville.

Swath edge. The pixels on one side (east or west, drawn) of a straight line tilted 8-15 degrees
from north (a Sentinel-1 track) are no data: NaN on every date (0 in the GeoTIFFs). It covers
about 6-14 % of the width.

Parcels. The valid area (the swath, less a 15 m strip along its edge) is cut recursively, as
cadastral blocks are: first into blocks of 40-160 ha by roads 15-25 m wide at any angle, then
each block, with its own field orientation, into fields by cuts across their longest extent in
that orientation (15 to 85 % along it, N(0, 1.5) degrees of jitter) with field margins 8-12 m
wide, until a field is below a size drawn log-uniformly in 1.5-12 ha. Fields are convex polygons of about
0.5-10 ha (50-1000 pixels); those under `MIN_PARCEL_PIXELS` are dropped. The polygons are
rasterised with `rasterio.features.rasterize(all_touched=False)` (pixel centres), and the
parcel ids are numbered 1..n from north-west to south-east; 0 is no parcel (margins, roads,
the no-data border). Classes are dealt round-robin over a shuffled parcel list, so every class
has a parcel as soon as there are 16 parcels.

Phenology. Each class has a nominal calendar (`CALENDARS`, in days after 1 January of the
season year, negative for the previous autumn): tillage, sowing, emergence, peak,
senescence_start, harvest, post_tillage (autumn ploughing). A parcel shifts its whole calendar
by N(0, 6) days (clipped to +-14) and each event by N(0, 2.5) days (clipped to +-6), rounded to
whole days, the order kept. An event dated d applies to the acquisitions on or after d. The
season year is the year of the middle of the time span (2017 by default). Alfalfa is perennial:
no sowing, cuts about every 33 days from April to October (`harvest` is the first cut, `cuts`
lists them all). Fallow (spring weeds) and quinoa (a low, broad canopy; only its `peak` is
given) have no clear transition.

Biomass. A relative biomass B(t) per parcel: 0 before emergence (0.08 of residue before the
tillage), a logistic rise from emergence to the peak, a plateau, a smooth decline to `r_sen`
of the peak from senescence_start to harvest, the stubble level from the harvest on, 0 after
the post-harvest tillage. The peak value is the class's `bmax` times U(0.85, 1.1).

Backscatter, per parcel and date (the noise-free profile), a water-cloud model at 39 degrees
of incidence:  sigma0 = A B cos(theta) (1 - tau^2) + tau^2 sigma0_soil,  tau^2 =
exp(-2 b B / cos(theta)), with A_VV = 0.14, b_VV = 1.0, A_VH = 0.055, b_VH = 0.8 (each class
and parcel scales A by a gain in dB). So VH rises with biomass, from about -24 dB on bare soil
to about -14 dB for maize at its peak; VV mixes soil and canopy. Soil, in dB:
VV = -14 + roughness + moisture + parcel offset N(0, 0.7), VH = -23 + 1.2 roughness +
moisture + the same offset. Roughness: +3 dB at each tillage (an abrupt step) decaying with a
50-day time constant, halved by the seedbed rolling at sowing; root crops (sugar beet, carrot,
onion, sweet potato, potato) lift the soil at harvest: +2.5 dB decaying in 30 days. Moisture:
1.5 dB * cos(2 pi (t - 15 d) / 1 year) (wet winters, dry summers) plus 1 dB of irrigation
between sowing and harvest for irrigated crops. Profiles are clipped to -20..-5 dB (VV) and
-28..-12 dB (VH). Field margins and roads (parcel 0) get a grass-verge profile.

Confusable classes, as in the paper: cotton, sweet potato and pepper share one calendar and
one canopy. Sweet potato is lifted green around day 245 (cotton defoliates from day 255 and is
picked around day 290); pepper's canopy scatters 3 dB more within +-10 days of its peak (day
195), tapering to cotton's by +-20 days. `DISTINCTIVE_WINDOWS` gives the days of the season
year where each differs from cotton, per-parcel jitter included; outside them the three
classes are drawn from the same law.

Rain. `rain_events` dates, drawn without replacement, raise VV by U(1.5, 3) dB and VH by 0.3
times that, over the whole scene (a wet canopy and soil on the day of acquisition).

Pixels. value = profile (linear power) * texture * speckle. The texture is a static,
spatially smooth log-normal field (0.4 dB for parcels, 1.5 dB for margins and roads; shared by
VV and VH); the speckle is Gamma(shape=ENL, scale=1/ENL), independent per pixel, date and
band (the intensity of a multi-looked SAR image; ENL 4.4 for Sentinel-1 IW GRD high
resolution). The cube is the result in dB, float32. Within a parcel, mean^2 / variance of the
intensity over the parcel mean is about 4.2 for ENL 4.4 (the texture adds 0.4 dB of spread).

Dates. `n_dates` acquisitions from `start` every `step_days` days (61 from 2017-01-03 every 6
days by default). `missing_dates` drops that many acquisitions (never the first or the last);
`irregular` moves every date but the first by up to (step_days - 1) // 2 days. `dates` gives
the list explicitly instead.

Drift, from one season to the next (every random draw unchanged, so a scene with a drift is
the same scene otherwise, and the defaults give the scene drawn without them, bit for bit):
`calendar_shift_days` moves every class's calendar (events, alfalfa's cuts, fallow's weeds, the
distinctive windows) by whole days, later when positive, while the weather (moisture's yearly
cycle, rain) stays; `crop_mix` deals the parcels to the classes in proportion to weights (class
name -> weight, 1 for a class left out; smooth weighted round-robin, so equal weights give the
round-robin above). Both are recorded in scene.json's `params` when set.
"""

from __future__ import annotations

from slamgeo.io.scene import SceneMeta, read_scene_meta
from slamgeo.synth.archive import archive_slices, write_archive
from slamgeo.synth.crops import (
    CALENDARS,
    CLASSES,
    CONFUSABLE,
    DISTINCTIVE_WINDOWS,
    EVENTS,
    CropCalendar,
    check_crop_mix,
    deal_classes,
)
from slamgeo.synth.parcels import CRS_EPSG, MIN_PARCEL_PIXELS, ORIGIN, PIXEL_SIZE, grid_parcels, write_grid_parcels
from slamgeo.synth.scene import (
    Scene,
    check_calendar_shift,
    check_trainable_dates,
    make_dates,
    make_scene,
    scene_classes,
)
from slamgeo.synth.writers import write_scene

__all__ = [
    "CALENDARS",
    "CLASSES",
    "CONFUSABLE",
    "CRS_EPSG",
    "DISTINCTIVE_WINDOWS",
    "EVENTS",
    "MIN_PARCEL_PIXELS",
    "ORIGIN",
    "PIXEL_SIZE",
    "CropCalendar",
    "Scene",
    "SceneMeta",
    "archive_slices",
    "check_calendar_shift",
    "check_crop_mix",
    "check_trainable_dates",
    "deal_classes",
    "grid_parcels",
    "make_dates",
    "make_scene",
    "read_scene_meta",
    "scene_classes",
    "write_archive",
    "write_grid_parcels",
    "write_scene",
]
