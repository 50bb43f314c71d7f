"""The quickstart's built-in trainer: scikit-learn on the retrain window of ``demo-churn``.

``modelog`` declares it in the ``modelog.trainers`` entry-point group under the
name ``demo-churn`` (the model ``modelog demo`` creates), so the retrain runner
started by ``modelog up`` or docker-compose finds it with no configuration;
for another model name, start the runner with
``--trainer NAME=modelog.streams.demo_trainer:fit``. It is ordinary operator
code -- the runner resolves it from its own configuration, never from an event
-- and a template for your own: a plain function that receives the training
split of the window and the :class:`~modelog.models.retrain_job.TrainerContext`
and returns a fitted model and optional metrics.

What it fits: a standardized logistic regression (one-hot encoded string
inputs) on the labelled *traffic* of the window when there are at least
``MIN_TRAFFIC_ROWS`` of it -- after a concept drift the registered training
dataset describes the old concept -- else on every row (dataset and traffic).
Imports scikit-learn and pyarrow only when called; no Kafka.

Examples
--------
>>> import datetime as dt
>>> import pyarrow as pa
>>> from modelog.models.retrain_job import TrainerContext
>>> rows = 400
>>> table = pa.table({
...     "usage": [((i * 37) % 200 - 100) / 50 for i in range(rows)],
...     "tenure": [((i * 53) % 200 - 100) / 50 for i in range(rows)],
...     "plan": [("basic", "pro")[i % 2] for i in range(rows)],
...     "label": [int(((i * 37) % 200 - 100) < ((i * 53) % 200 - 100)) for i in range(rows)],
...     "source": ["traffic"] * rows})
>>> ctx = TrainerContext(model="demo-churn", request_id="r", reason="drift",
...                      features=["usage", "tenure", "plan"], target="label", start=None,
...                      end=None, production_version=1, rows=rows)
>>> model, metrics = fit(table, ctx)
>>> metrics["train_rows"], metrics["train_accuracy"] > 0.9
(400.0, True)
"""

from __future__ import annotations

from typing import Any

from modelog.models.retrain_job import TrainerContext

__all__ = ["MIN_TRAFFIC_ROWS", "churn_pipeline", "fit"]

MIN_TRAFFIC_ROWS = 100
"""Fewest labelled traffic rows for the trainer to fit on traffic alone."""


def fit(data: Any, context: TrainerContext) -> tuple[Any, dict[str, float]]:
    """Fit a logistic regression on ``data`` (a ``pyarrow.Table``, the window's train split).

    Returns the fitted scikit-learn pipeline and its training metrics
    (``train_rows``, ``train_accuracy``, ``traffic_only``).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table: pa.Table = data
    traffic_only = False
    if "source" in table.column_names:
        traffic = table.filter(pc.equal(table.column("source"), "traffic"))
        if traffic.num_rows >= MIN_TRAFFIC_ROWS:
            table, traffic_only = traffic, True
    frame = table.select([*context.features, context.target]).to_pandas().dropna(
        subset=[context.target])
    model = churn_pipeline(table.select(context.features).schema)
    x, y = frame[context.features], frame[context.target].astype(int)
    model.fit(x, y)
    return model, {"train_rows": float(len(frame)),
                   "train_accuracy": float(model.score(x, y)),
                   "traffic_only": float(traffic_only)}


def churn_pipeline(schema: Any) -> Any:
    """An unfitted scikit-learn pipeline for the inputs of ``schema`` (a ``pyarrow.Schema``):
    numeric columns standardized, text columns one-hot encoded (unseen values ignored),
    then a logistic regression."""
    import pyarrow as pa
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    text = [f.name for f in schema
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    numeric = [f.name for f in schema if f.name not in text]
    columns = ColumnTransformer([
        ("num", StandardScaler(), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), text),
    ])
    return Pipeline([("columns", columns), ("clf", LogisticRegression(max_iter=1000))])
