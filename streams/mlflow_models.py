"""MLflow 3's logged-model routes (``mlflow.<flavor>.log_model`` creates one per model).

``logged-models`` create -> :class:`~modelog.models.mlflow_events.LoggedModelCreated`
(its artifact root ``mlflow-artifacts:/<experiment>/models/<id>/artifacts``);
finalize, tags, params and delete -> :class:`~modelog.models.mlflow_events.LoggedModelUpdated`.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

from typing import Any

from modelog.models import mlflow_events as me
from modelog.models.mlflow_fold import LoggedModel, MlflowFold
from modelog.streams import mlflow_search as search
from modelog.streams.mlflow_common import (
    experiment,
    integer,
    invalid,
    missing,
    tag_list,
    tags_of,
    text,
)
from modelog.streams.mlflow_state import MlflowState

__all__ = ["ROUTES"]

Args = dict[str, Any]

_LM_STATUS = {"PENDING": "LOGGED_MODEL_PENDING", "READY": "LOGGED_MODEL_READY",
              "FAILED": "LOGGED_MODEL_UPLOAD_FAILED"}


def _lm_json(m: LoggedModel) -> Args:
    return {"info": {"model_id": m.model_id, "experiment_id": m.experiment_id, "name": m.name,
                     "artifact_uri": m.artifact_location, "creation_timestamp_ms": m.created_ms,
                     "last_updated_timestamp_ms": m.updated_ms, "source_run_id":
                     m.source_run_id or "", "model_type": m.model_type,
                     "status": _LM_STATUS.get(m.status, m.status), "tags": tag_list(m.tags)},
            "data": {"params": [{"key": k, "value": v} for k, v in m.params.items()],
                     "metrics": []}}


def _lm(fold: MlflowFold, model_id: str) -> LoggedModel:
    found = fold.logged_models.get(model_id)
    if found is None or found.deleted:
        raise missing(f"Logged model with ID '{model_id}' not found.")
    return found


def create_logged_model(state: MlflowState, args: Args, caller: Any) -> Args:
    exp_id = text(args, "experiment_id", "0")
    with state.reading() as fold:
        experiment(fold, exp_id)
    model_id = "m-" + state.client.new_id().replace("-", "")
    params = tags_of(args, "params")
    state.write(state.new(
        me.LoggedModelCreated, model_id, model_id=model_id, experiment_id=exp_id,
        name=str(args.get("name") or model_id), model_type=str(args.get("model_type") or ""),
        source_run_id=args.get("source_run_id") or None, params=params, tags=tags_of(args),
        artifact_location=f"mlflow-artifacts:/{exp_id}/models/{model_id}/artifacts"))
    with state.reading() as fold:
        return {"model": _lm_json(fold.logged_models[model_id])}


def _update_lm(state: MlflowState, model_id: str, **change: Any) -> Args:
    with state.reading() as fold:
        _lm(fold, model_id)
    state.write(state.new(me.LoggedModelUpdated, model_id, model_id=model_id, **change))
    with state.reading() as fold:
        return {"model": _lm_json(fold.logged_models[model_id])}


def finalize_logged_model(state: MlflowState, args: Args, caller: Any) -> Args:
    status = str(args.get("status") or "LOGGED_MODEL_READY").replace("LOGGED_MODEL_", "")
    status = {"UPLOAD_FAILED": "FAILED"}.get(status, status)
    if status not in _LM_STATUS:
        raise invalid(f"invalid logged model status {args.get('status')!r}")
    return _update_lm(state, text(args, "model_id"), status=status)


def get_logged_model(state: MlflowState, args: Args, caller: Any) -> Args:
    with state.reading() as fold:
        return {"model": _lm_json(_lm(fold, text(args, "model_id")))}


def delete_logged_model(state: MlflowState, args: Args, caller: Any) -> Args:
    _update_lm(state, text(args, "model_id"), deleted=True)
    return {}


def set_logged_model_tags(state: MlflowState, args: Args, caller: Any) -> Args:
    _update_lm(state, text(args, "model_id"), set_tags=tags_of(args))
    return {}


def delete_logged_model_tag(state: MlflowState, args: Args, caller: Any) -> Args:
    _update_lm(state, text(args, "model_id"), removed_tags=[text(args, "tag_key")])
    return {}


def log_logged_model_params(state: MlflowState, args: Args, caller: Any) -> Args:
    _update_lm(state, text(args, "model_id"), params=tags_of(args, "params"))
    return {}


def search_logged_models(state: MlflowState, args: Args, caller: Any) -> Args:
    exp_ids = {str(i) for i in args.get("experiment_ids") or []}
    with state.reading() as fold:
        found = sorted((m for m in fold.logged_models.values() if not m.deleted
                        and (not exp_ids or m.experiment_id in exp_ids)),
                       key=lambda m: (-m.created_ms, m.model_id))
        chunk, token = search.page(found, integer(args, "max_results", 100),
                                   args.get("page_token"))
        answer: Args = {"models": [_lm_json(m) for m in chunk]}
    if token:
        answer["next_page_token"] = token
    return answer


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("POST", "/logged-models", create_logged_model),
    ("POST", "/logged-models/search", search_logged_models),
    ("GET", "/logged-models/{model_id}", get_logged_model),
    ("PATCH", "/logged-models/{model_id}", finalize_logged_model),
    ("DELETE", "/logged-models/{model_id}", delete_logged_model),
    ("PATCH", "/logged-models/{model_id}/tags", set_logged_model_tags),
    ("DELETE", "/logged-models/{model_id}/tags/{tag_key}", delete_logged_model_tag),
    ("POST", "/logged-models/{model_id}/params", log_logged_model_params),
)
"""``(method, path under /api/2.0/mlflow, handler)`` of the logged-model routes."""
