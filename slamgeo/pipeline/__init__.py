"""The run layer: the season pipeline's configuration (`config`) and steps (`steps`), and the
demo configuration shipped with the package (`demo.yaml`)."""
