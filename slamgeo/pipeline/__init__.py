"""The run layer: the season pipeline's configuration (`config`), its checks against the inputs
before the first step (`checks`), what each step leaves behind (`outputs`), the steps (`steps`),
the state file and run manifests (`state`), and the demo configuration shipped with the package
(`demo.yaml`)."""
