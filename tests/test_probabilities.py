"""Class probabilities on predictions (``PredictionMade`` v3): validation, estimation, views.

A classifier logs the class it answered as ``output`` and its class probabilities
as ``probabilities``; label-free performance estimation reads them. Older records
(v2: no probabilities, perhaps a dict of probabilities as the output) are upcast
and estimated as before.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from modelog.models import codec
from modelog.models.errors import EventValidationError
from modelog.models.events import Event, LabelObserved, PredictionMade
from modelog.models.perf_estimation import probability_view
from modelog.models.quality_monitor import QualityMonitor
from modelog.models.validation import check_probabilities
from modelog.store.schema import SCHEMA_VERSION, create_schema, rebuild_projections
from tests.test_lifecycle_views import ledger_table

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


# -- the SDK's rules -------------------------------------------------------------------------
@pytest.mark.parametrize(("probabilities", "output", "field", "rule"), [
    ({"a": 0.5, "b": math.nan}, "a", "probabilities.b", "finite"),
    ({"a": 0.5, "b": math.inf}, "a", "probabilities.b", "finite"),
    ({"a": 1.2, "b": -0.2}, "a", "probabilities.a", "in [0, 1]"),
    ({"a": True, "b": 0.0}, "a", "probabilities.a", "must be a number"),
    ({"a": "0.5", "b": 0.5}, "a", "probabilities.a", "must be a number"),
    ({"a": 1.0}, "a", "probabilities", "2 to 10,000 classes"),
    ({}, None, "probabilities", "2 to 10,000 classes"),
    ({"a": 0.2, "b": 0.2}, "a", "probabilities", "sum to 1"),
    ({"a": 0.4, "b": 0.6}, "c", "output", "one of the classes"),
    ({0: 0.4, 1: 0.6}, 2, "output", "one of the classes"),
    ({0: 0.4, 1: 0.6}, [0.4, 0.6], "output", "the class answered"),
    ({1: 0.4, "1": 0.6}, 1, "probabilities", "names a class twice"),
    ({None: 0.4, "b": 0.6}, "b", "probabilities", "classes must be str"),
    ({(1, 2): 0.4, "b": 0.6}, "b", "probabilities", "classes must be str"),
    ({"": 0.4, "b": 0.6}, "b", "probabilities", "1 to 256 characters"),
    ({"x" * 300: 0.4, "b": 0.6}, "b", "probabilities", "1 to 256 characters"),
    ([0.4, 0.6], 1, "probabilities", "mapping of class -> probability"),
    ("0.4,0.6", 1, "probabilities", "mapping of class -> probability"),
    ({str(i): 1e-5 for i in range(10_001)}, None, "probabilities", "2 to 10,000 classes"),
])
def test_bad_probabilities_are_refused_naming_field_value_and_rule(
        probabilities: Any, output: Any, field: str, rule: str) -> None:
    with pytest.raises(EventValidationError) as info:
        check_probabilities(probabilities, output)
    assert info.value.field == field and rule in info.value.rule, info.value
    assert "nothing was sent" in str(info.value)


def test_good_probabilities_are_normalised_to_text_classes() -> None:
    classes = np.array([0, 1, 2])
    row = np.array([0.2, 0.3, 0.5], dtype=np.float32)  # float32 sums off 1 by a rounding
    got = check_probabilities(dict(zip(classes, row, strict=True)), 2)
    assert list(got) == ["0", "1", "2"] and all(type(v) is float for v in got.values())
    assert check_probabilities({True: 0.9, False: 0.1}, True) == {"True": 0.9, "False": 0.1}
    assert check_probabilities({"no": 0.5, "yes": 0.5}, None) == {"no": 0.5, "yes": 0.5}
    # every probability encodes, and reads back the same
    ev = _prediction(0, output=2, probabilities=got)
    assert codec.decode(codec.encode(ev)) == ev


# -- estimation from the probabilities logged beside the class ---------------------------------
def _prediction(i: int, *, output: Any, probabilities: dict[str, float] | None = None,
                model: str = "m", version: int = 1) -> PredictionMade:
    return PredictionMade(id=f"e{i}", time=T0 + dt.timedelta(seconds=i), aggregate=model,
                          prediction_id=f"p{i}", model=model, model_version=version,
                          inputs={"x": float(i % 7)}, output=output,
                          probabilities=probabilities)


def _label(i: int, label: Any, model: str = "m") -> LabelObserved:
    return LabelObserved(id=f"l{i}", time=T0 + dt.timedelta(seconds=i, milliseconds=500),
                         aggregate=model, prediction_id=f"p{i}", model=model, label=label)


def _multiclass(n: int, seed: int, *, as_output: bool) -> list[Event]:
    """Three integer classes; the truth drawn from the model's (calibrated) probabilities."""
    rng = random.Random(seed)
    log: list[Event] = []
    for i in range(n):
        w = [rng.expovariate(1.0) ** 2 for _ in range(3)]
        probs = {str(c): x / sum(w) for c, x in enumerate(w)}
        best = max(range(3), key=lambda c: probs[str(c)])
        truth = rng.choices(range(3), weights=list(probs.values()))[0]
        if as_output:  # v2 style: the probabilities are the output
            log.append(_prediction(i, output=probs))
            log.append(_label(i, str(truth)))
        else:  # v3: the class answered, with its probabilities
            log.append(_prediction(i, output=best, probabilities=probs))
            log.append(_label(i, truth))
    return log


def _run(log: list[Event]) -> list[Event]:
    qm = QualityMonitor()
    return [out for ev in log for out in qm.process(ev)]


def _figures(out: list[Event], kind: str, field: str) -> list[float]:
    return [getattr(e, field) for e in out if type(e).__name__ == kind]


def test_class_with_probabilities_is_estimated_as_the_probabilities_as_output_were() -> None:
    new = _run(_multiclass(6_000, 3, as_output=False))
    old = _run(_multiclass(6_000, 3, as_output=True))
    estimated = _figures(new, "PerformanceEstimated", "accuracy")
    assert len(estimated) == 12
    assert estimated == _figures(old, "PerformanceEstimated", "accuracy")
    # integer classes with labels 0, 1, 2 are a classifier: realized figures come too
    realized = _figures(new, "PerformanceRealized", "realized_accuracy")
    assert len(realized) >= 11
    assert realized == _figures(old, "PerformanceRealized", "realized_accuracy")
    gaps = _figures(new, "PerformanceRealized", "gap")
    assert abs(sum(gaps) / len(gaps)) < 0.02, gaps


def test_the_class_answered_not_the_most_probable_is_what_is_estimated() -> None:
    """A tuned threshold answers 1 from P(1) = 0.3: its chance of being right is 0.3."""
    view = probability_view({"0": 0.7, "1": 0.3}, predicted="1")
    assert view is not None and (view.predicted, view.confidence, view.positive) == \
        ("1", 0.3, 0.3)
    assert probability_view({"0": 0.7, "1": 0.3}, predicted="7") == \
        probability_view({"0": 0.7, "1": 0.3})  # not a class: the most probable one
    rng = random.Random(5)
    log: list[Event] = []
    for i in range(3_000):
        p1 = rng.uniform(0.2, 0.45)
        log.append(_prediction(i, output=1, probabilities={"0": 1 - p1, "1": p1}))
        log.append(_label(i, int(rng.random() < p1)))
    out = _run(log)
    estimated = _figures(out, "PerformanceEstimated", "accuracy")
    realized = _figures(out, "PerformanceRealized", "realized_accuracy")
    assert estimated and all(0.25 < a < 0.4 for a in estimated), estimated
    assert realized and abs(sum(realized) / len(realized) - 0.325) < 0.03, realized


def test_a_float_class_with_probabilities_is_not_taken_for_a_regressor() -> None:
    """A float output read as P(class 1) with a label 2.0 is a regressor; a float *class*
    answered with its probabilities is not."""
    rng = random.Random(9)
    log: list[Event] = []
    for i in range(2_000):
        w = [rng.random() + 0.01 for _ in range(3)]
        probs = {f"{c}.0": x / sum(w) for c, x in enumerate(w)}
        best = max(range(3), key=lambda c: w[c])
        log.append(_prediction(i, output=float(best), probabilities=probs))
        log.append(_label(i, 2.0))
    qm = QualityMonitor()
    out = [o for ev in log for o in qm.process(ev)]
    assert qm.estimator("m", 1) is not None
    assert _figures(out, "PerformanceRealized", "realized_accuracy")
    regressor = QualityMonitor()
    for i in range(600):
        regressor.process(_prediction(i, output=0.25))
        regressor.process(_label(i, 2.5))
    assert regressor.estimator("m", 1) is None


# -- the predictions view ------------------------------------------------------------------------
def test_the_predictions_view_has_the_probabilities_and_an_older_file_is_rebuilt(
        tmp_path: Path) -> None:
    new = _prediction(1, output="yes", probabilities={"no": 0.25, "yes": 0.75})
    v2 = json.loads(codec.encode(_prediction(2, output=0.4)))
    v2["schema_version"] = 2
    del v2["probabilities"]
    old = codec.decode(json.dumps(v2).encode())
    path = tmp_path / "v5.duckdb"
    con = duckdb.connect(str(path))
    create_schema(con)
    # a schema-5 file: its predictions table has no probabilities column
    con.execute("DROP TABLE predictions")
    con.execute("""CREATE TABLE predictions (event_id VARCHAR, prediction_id VARCHAR,
        model VARCHAR, model_version INTEGER, code_version VARCHAR, time TIMESTAMPTZ,
        inputs JSON, output JSON, producer VARCHAR)""")
    con.execute("UPDATE schema_info SET version = 5")
    con.register("batch", ledger_table([new, old]))
    con.execute('INSERT INTO events SELECT id, type, schema_version, time, aggregate, producer, '
                'topic, partition, "offset", now(), payload FROM batch')
    con.close()
    con = duckdb.connect(str(path))
    assert rebuild_projections(con) == 2
    rows = con.execute("SELECT prediction_id, output, probabilities->>'$.yes' FROM predictions "
                       "ORDER BY prediction_id").fetchall()
    assert rows == [("p1", '"yes"', "0.75"), ("p2", "0.4", None)]
    assert con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]


def test_probabilities_that_start_late_are_still_estimated() -> None:
    """An online classifier gives no probabilities before it has learned two classes: the
    version's first predictions come without, and estimation starts when they come."""
    rng = random.Random(2)
    log: list[Event] = [_prediction(i, output=1) for i in range(50)]
    for i in range(50, 1_050):
        p1 = rng.uniform(0.6, 0.95)
        log.append(_prediction(i, output=1, probabilities={"0": 1 - p1, "1": p1}))
    qm = QualityMonitor()
    out = [o for ev in log for o in qm.process(ev)]
    estimator = qm.estimator("m", 1)
    assert estimator is not None and estimator.n_predictions == 1_000
    assert len(_figures(out, "PerformanceEstimated", "accuracy")) == 2


def test_labels_from_a_float_column_match_integer_classes() -> None:
    """Labels read from a float column (1.0) name the classes "0"/"1" of an integer
    classifier: the realized accuracy counts them right."""
    rng = random.Random(3)
    log: list[Event] = []
    for i in range(2_000):
        p1 = rng.uniform(0.05, 0.95)
        out = int(p1 >= 0.5)
        log.append(_prediction(i, output=out, probabilities={"0": 1 - p1, "1": p1}))
        log.append(_label(i, float(out)))  # always right
    realized = _figures(_run(log), "PerformanceRealized", "realized_accuracy")
    assert realized and all(a == 1.0 for a in realized), realized
