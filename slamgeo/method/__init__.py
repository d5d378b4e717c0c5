"""The method, in PyTorch: the CAE (`model`), its training (`train`), Grad-SLAM (`gradslam`),
per-date attributions behind one interface (`attribution`), faithfulness (`faithfulness`) and
the time-series helpers they share (`series`)."""
