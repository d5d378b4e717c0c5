"""I/O and contracts: locations and the output rule (`storage`), the cube and results
contracts (`cube`), model checkpoints (`checkpoint`), the readers of every source (`ingest`),
the synthetic scene (`synth`), provenance (`provenance`) and the schemas of the JSON files
slamgeo reads back (`records`)."""
