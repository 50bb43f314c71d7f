"""modelog.dashboard: the Streamlit app (``modelog dashboard``).

Pages: live monitoring (alerts with evidence, error rates, anomaly scores,
dead letters), runs, datasets, registry and lineage. All reads go through
:class:`modelog.store.reader.Reader`, which never blocks the projector.
"""
