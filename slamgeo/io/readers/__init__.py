"""Readers of Sentinel-1 inputs, one module per source, each opening its source as a lazy,
validated cube of the contract (`slamgeo.io.cube`; float32 dB `VV`, `VH`): `geotiff` (per-date
GeoTIFFs, `open_geotiffs`), `stac` (a STAC ItemCollection of GeoTIFF/COG assets, `open_stac`),
`dataset` (a NetCDF file or Zarr store, `open_dataset_cube`) and `table` (a long Parquet table of
per-sample series, `open_table`), with the helpers they share in `_common`. Which reader fits an
input, the store writer and the plausibility check are `slamgeo.io.ingest`'s (`detect_source`,
`open_source`, `load`, `ingest`, `check_plausible`).
"""
