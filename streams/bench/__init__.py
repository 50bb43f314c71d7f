"""Benchmarks and the monitoring quality suite: they drive the broker, the SDK,
the worker and the projector, so they sit at the top of ``streams/``."""
