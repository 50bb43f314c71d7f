"""The live page's point-anomaly panel: the most anomalous recent inputs and what offends.

:func:`anomalous_inputs` queries the ``prediction_anomalies`` view (one row per
prediction the worker scored against its reference) for the highest-scoring
of the latest scored predictions, with their inputs from ``predictions``;
:func:`anomaly_panel` is the Streamlit panel the live page shows. The query is
pure of Streamlit (a DataFrame out) and tested without a browser. Reads through
:mod:`modelog.store` (a :class:`~modelog.dashboard.data.QuerySource`).

Examples
--------
>>> import duckdb
>>> from modelog.dashboard.data import ConnectionSource
>>> from modelog.store.schema import create_schema
>>> con = duckdb.connect()
>>> create_schema(con)
>>> anomalous_inputs(ConnectionSource(con), "churn").empty
True
"""

from __future__ import annotations

import pandas as pd

from modelog.dashboard.data import QuerySource, bounded
from modelog.dashboard.text import plain

__all__ = ["anomalous_inputs", "anomaly_panel"]


def anomalous_inputs(source: QuerySource, model: str, version: int | None = None, *,
                     recent: int = 5_000, limit: int = 20) -> pd.DataFrame:
    """The ``limit`` highest-scoring of the latest ``recent`` scored predictions, highest first:
    score, gross outlier or not, offending features, the inputs and the reference."""
    df: pd.DataFrame = source.query_df(
        """WITH latest AS (
               SELECT * FROM prediction_anomalies
               WHERE model = $model AND ($version IS NULL OR model_version = $version)
               ORDER BY scored_at DESC LIMIT $recent)
           SELECT a.scored_at, a.model_version, a.prediction_id, a.score, a.outlier,
                  array_to_string(a.features, ', ') AS offending, p.inputs, a.reference
           FROM (SELECT * FROM latest ORDER BY score DESC, prediction_id LIMIT $limit) a
           LEFT JOIN predictions p ON p.model = $model AND p.prediction_id = a.prediction_id
           ORDER BY a.score DESC, a.prediction_id""",
        {"model": model, "version": version, "recent": bounded("recent", recent),
         "limit": bounded("limit", limit)})
    return df


def anomaly_panel(source: QuerySource, model: str, version: int | None) -> None:
    """The Streamlit panel: counts of gross outliers and the most anomalous recent inputs."""
    import streamlit as st

    st.subheader("Most anomalous recent inputs")
    frame = anomalous_inputs(source, model, version)
    if frame.empty:
        st.caption("No prediction scored yet: scores start with the first prediction of a "
                   "version registered with its training dataset, else after the warm-up.")
        return
    outliers = int(frame["outlier"].sum())
    st.caption(f"Scored against {plain(frame['reference'].iloc[0])}; {outliers} gross outlier(s) "
               "among the highest scores (score: largest robust z of a feature; an unseen "
               "category scores 10).")
    st.dataframe(frame.drop(columns=["reference"]), hide_index=True, use_container_width=True)
