"""Classical detectors that are not neural networks, scored by the same evaluation code (`jaxdl.metrics.anomaly`)."""
