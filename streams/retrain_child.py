"""The process a retrain job trains in: run the operator's trainer, store and score its model.

The retrain runner (:mod:`modelog.streams.retrainer`) starts
``python -m modelog.streams.retrain_child JOB_DIR`` for each job, with a
timeout; a trainer that raises, hangs or crashes the interpreter takes only
this process down. ``JOB_DIR/job.json`` says what to do:

* ``trainer``: the ``module``/``function`` the *runner's configuration* mapped
  the model to (never taken from an event);
* ``dataset_uri``: the assembled training window, a dataset version in the
  artifact store (``split`` column: ``train``/``holdout``);
* ``context``: the :class:`~modelog.models.retrain_job.TrainerContext` fields;
* ``metric``: the configured gate metric (``null``: chosen from the labels);
* ``production``: the production version's artifact (flavor, URI, digest), or
  ``null``.

The child reads the window, calls ``trainer(train_table, context)`` -- the
``train`` split with every column: ``context.features``, ``context.target``
and the bookkeeping columns (``event_time``, ``source``: ``dataset`` or
``traffic``...), so a trainer may weight recent traffic -- checks
that it returned a model modelog can store (a registered flavor), stores it
content-addressed, and scores the candidate and production on the holdout
(production from its artifact; a version registered without one is scored by
the outputs it served, recorded in the ledger). It writes ``JOB_DIR/result.json``:
``{"ok": true, ...}`` or ``{"ok": false, "error": ..., "traceback": ...}``.
It exits on its own when its parent (the runner) dies.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.config`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["main", "predict", "run_child"]


def _watch_parent(parent: int) -> None:
    """Exit when the runner that started this process is gone (kill -9 included)."""
    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(3)
    threading.Thread(target=watch, daemon=True, name="modelog-retrain-watchdog").start()


def predict(model: Any, frame: Any, metric: str = "accuracy") -> list[Any]:
    """Predictions of ``model`` for the rows of the pandas DataFrame ``frame``.

    scikit-learn-like objects answer ``predict(frame)`` (on the columns they were fit
    on, when they know them: ``feature_names_in_``), River models
    ``predict_one(row)``. A PyTorch ``nn.Module`` is called on the numeric inputs
    as one float tensor (in ``frame``'s column order; text inputs are left out --
    a model that needs them encoded comes with a ``predict``): several outputs are
    class scores (the class is the arg max), one output is the value (``mae``)
    or the logit of class 1 (``accuracy``/``f1``: class 1 when it is above 0).
    """
    if hasattr(model, "predict"):
        out = model.predict(_fitted_columns(model, frame))
        return list(out.tolist() if hasattr(out, "tolist") else out)
    if hasattr(model, "predict_one"):  # River
        return [model.predict_one(row) for row in frame.to_dict("records")]
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return _predict_torch(torch, model, frame, metric)
    raise TypeError(f"a {type(model).__name__} has no predict() or predict_one(); the runner "
                    "cannot score it on the holdout")


def _fitted_columns(model: Any, frame: Any) -> Any:
    """``frame``'s columns the model was fit on, in that order, when it says which.

    A scikit-learn estimator or pipeline fit on a DataFrame knows its input
    columns (``feature_names_in_``) and refuses any other set, while the holdout
    carries every input the application logged: a model trained on some of them
    is scored on those.
    """
    from modelog.models.flavors import fitted_columns

    wanted = fitted_columns(model)
    if wanted is None:
        return frame
    missing = [n for n in wanted if n not in frame.columns]
    if missing:
        from modelog.models.errors import RetrainJobError

        raise RetrainJobError(
            f"the {type(model).__name__} was fit on {', '.join(missing)}, which the logged "
            f"inputs of the holdout lack (they have {', '.join(map(str, frame.columns))}): "
            "log those inputs with the predictions, or train on the logged ones")
    return frame[wanted]


def _predict_torch(torch: Any, model: Any, frame: Any, metric: str) -> list[Any]:
    from modelog.models.errors import RetrainJobError

    numeric = [c for c in frame.columns if _is_numeric(frame[c])]
    if not numeric:
        raise RetrainJobError(
            "a PyTorch model is scored on the numeric inputs, and none of "
            f"{', '.join(map(str, frame.columns))} is numeric: return an object with "
            "predict(frame) that encodes them as the model needs")
    x = torch.tensor(frame[numeric].to_numpy(dtype="float32"))
    model.eval()
    with torch.no_grad():
        out = model(x)
    if out.ndim == 2 and out.shape[1] > 1:
        return [int(i) for i in out.argmax(dim=1).tolist()]
    values = out.reshape(-1).tolist()
    if metric == "mae":
        return [float(v) for v in values]
    return [int(v > 0.0) for v in values]


def _is_numeric(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column))


def _served(holdout: Any, version: int) -> tuple[list[Any], list[Any]]:
    """Outputs ``version`` served for holdout rows, with the rows' labels."""
    rows = [r for r in holdout.select(["served_version", "served_output", "label"]).to_pylist()
            if r["served_version"] == version and r["served_output"] is not None]
    return [json.loads(r["served_output"]) for r in rows], [r["label"] for r in rows]


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    """Do the job ``job`` (the parsed ``job.json``); return the result to write."""
    import pyarrow.compute as pc

    from modelog.config import Settings
    from modelog.models import flavors
    from modelog.models.errors import ModelsError, RetrainJobError
    from modelog.models.retrain_job import TrainerContext, choose_metric, score, unpack_result
    from modelog.models.validation import artifact_suffix
    from modelog.store.artifacts import ArtifactStore

    artifacts = ArtifactStore.from_settings(Settings.from_env())
    window = artifacts.read_table(job["dataset_uri"])
    features, target = list(job["context"]["features"]), str(job["context"]["target"])
    train = window.filter(pc.equal(window.column("split"), "train"))
    holdout = window.filter(pc.equal(window.column("split"), "holdout"))
    ctx = dict(job["context"])
    for key in ("start", "end"):
        ctx[key] = None if ctx[key] is None else dt.datetime.fromisoformat(ctx[key])
    context = TrainerContext(**ctx)

    module = importlib.import_module(job["trainer"]["module"])
    fit: Any = module
    for part in str(job["trainer"]["function"]).split("."):
        fit = getattr(fit, part)
    model, trainer_metrics = unpack_result(fit(train, context))
    try:
        serialized = flavors.dump(model)
    except ModelsError as exc:
        raise RetrainJobError(
            f"the trainer returned a {type(model).__module__}.{type(model).__qualname__}, which "
            f"is not a model modelog can store ({exc}); return a fitted scikit-learn, PyTorch "
            "or River model") from None
    digest, uri = artifacts.put_bytes(serialized.data, artifact_suffix(serialized.format))

    labels = holdout.column(target).to_pylist()
    metric = choose_metric(labels, job.get("metric"))
    frame = holdout.select(features).to_pandas()
    candidate = _scored("the candidate the trainer returned", model, frame, metric, labels) \
        if labels else None
    production: float | None = None
    prod = job.get("production")
    source = None
    if prod is not None and labels:
        # a version stored as weights only (custom, a River spec, a PyTorch state dict) is
        # judged by what it served
        if prod.get("artifact_digest") and prod.get("flavor") not in ("custom", "river-spec",
                                                                        "pytorch"):
            try:
                loaded = flavors.load_verified(artifacts.read_bytes(prod["artifact_uri"]
                                                                    or prod["artifact_digest"]),
                                               prod["artifact_digest"], prod["flavor"])
            except Exception as exc:
                raise RetrainJobError(
                    f"the production version v{prod['version']} cannot be loaded "
                    f"({type(exc).__name__}: {exc}); the candidate cannot be compared with "
                    "it") from None
            production, source = (_scored(f"the production version v{prod['version']}",
                                          loaded, frame, metric, labels), "artifact")
        else:
            served, truth = _served(holdout, int(prod["version"]))
            if not served:
                raise RetrainJobError(
                    f"the production version v{prod['version']} has no artifact and served "
                    "none of the holdout rows: it cannot be evaluated")
            production, source = score(metric, served, truth), "served outputs"
    signature = flavors.infer_signature(train.select(features))
    return {
        "ok": True, "artifact_uri": uri, "artifact_digest": digest,
        "flavor": serialized.flavor, "library_versions": serialized.library_versions,
        "signature": signature, "trainer_metrics": trainer_metrics, "metric": metric,
        "candidate": candidate, "production": production, "production_source": source,
        "train_rows": train.num_rows, "holdout_rows": holdout.num_rows,
    }


def _scored(what: str, model: Any, frame: Any, metric: str, labels: list[Any]) -> float:
    """``model``'s ``metric`` on the holdout; a failure names the model it was, not the trainer."""
    from modelog.models.errors import RetrainJobError
    from modelog.models.retrain_job import score

    try:
        return score(metric, predict(model, frame, metric), labels)
    except RetrainJobError:
        raise
    except Exception as exc:
        raise RetrainJobError(
            f"scoring {what} on the holdout failed ({type(exc).__name__}: {exc}); the "
            f"holdout's inputs are {', '.join(map(str, frame.columns))}: the model must "
            "predict from those (or a subset it was fit on by name)") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m modelog.streams.retrain_child JOB_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    job_dir = Path(args[0])
    _watch_parent(int(args[1]) if len(args) > 1 else os.getppid())
    try:
        result = run_child(json.loads((job_dir / "job.json").read_text()))
    except BaseException as exc:  # everything the trainer does is reported, nothing escapes
        from modelog.models.errors import RetrainJobError

        # the runner's own verdicts (not a model, production unloadable) read as they are
        error = str(exc) if isinstance(exc, RetrainJobError) else f"{type(exc).__name__}: {exc}"
        result = {"ok": False, "error": error[:4000], "verdict": isinstance(exc, RetrainJobError),
                  "traceback": "".join(traceback.format_exception(exc))[-20_000:]}
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(job_dir / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
