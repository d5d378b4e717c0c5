"""Readers of Sentinel-1 inputs, one module per source, each opening its source as a lazy,
validated cube of the contract (`slamgeo.io.cube`; float32 dB `VV`, `VH`): `archive` (STAC
Items of GeoTIFF/COG assets loaded onto one grid with odc-stac, `open_items`: per-date GeoTIFFs
described by `geotiff`, a STAC ItemCollection read by `stac`, or a STAC API search),
`dataset` (a NetCDF file or Zarr store, `open_dataset_cube`) and `table` (a long Parquet table of
per-sample series, `open_table`), with the helpers they share in `_common`. Which reader fits an
input, the store writer and the plausibility check are `slamgeo.io.ingest`'s (`detect_source`,
`open_source`, `load`, `ingest`, `check_plausible`).
"""
