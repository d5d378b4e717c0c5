"""The regional jobs, on Dask: encode and explain every pixel (`explain`), k-Means
(`cluster`), per-parcel aggregation and voting (`parcels`, `metrics`), a model's dates moved
to another season (`season`), and the Dask runtime they share (`runtime`)."""
