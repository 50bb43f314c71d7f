"""What the MLflow endpoint's route modules share: argument reading, MLflow's limits, lookups.

Arguments come as MLflow's client sends them (JSON numbers or strings for
64-bit ints); each reader raises MLflow's ``INVALID_PARAMETER_VALUE`` naming
the parameter, the value and the rule. The limits are MLflow's own.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.

Examples
--------
>>> integer({"max_results": "5"}, "max_results", 10)
5
>>> tags_of({"tags": [{"key": "a", "value": "1"}]})
{'a': '1'}
"""

from __future__ import annotations

import math
import re
from typing import Any

from modelog.models.event_base import NAME_PATTERN
from modelog.models.mlflow_fold import Experiment, MlflowFold, RunRecord
from modelog.streams.errors import MlflowApiError

__all__ = ["MAX_PARAM_VALUE", "MAX_TAG_VALUE", "check_key", "check_name", "exp_json",
           "experiment", "integer", "invalid", "missing", "number", "run", "tag_list",
           "tags_of", "text"]

MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
_NAME = re.compile(NAME_PATTERN)


def invalid(message: str) -> MlflowApiError:
    """MLflow's ``INVALID_PARAMETER_VALUE`` (HTTP 400)."""
    return MlflowApiError("INVALID_PARAMETER_VALUE", message)


def missing(message: str) -> MlflowApiError:
    """MLflow's ``RESOURCE_DOES_NOT_EXIST`` (HTTP 404)."""
    return MlflowApiError("RESOURCE_DOES_NOT_EXIST", message, 404)


def text(args: dict[str, Any], key: str, default: str | None = None) -> str:
    """A string argument; without ``default`` it is required."""
    value = args.get(key)
    if value is None or value == "":
        if default is None:
            raise invalid(f"Missing value for required parameter '{key}'")
        return default
    if not isinstance(value, str):
        raise invalid(f"Invalid value {value!r} for parameter '{key}' supplied: it must be "
                      "a string")
    return value


def integer(args: dict[str, Any], key: str, default: int | None = None) -> int:
    """An integer argument (MLflow sends 64-bit ints as JSON numbers or strings)."""
    value = args.get(key)
    if value is None or value == "":
        if default is None:
            raise invalid(f"Missing value for required parameter '{key}'")
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid value {value!r} for parameter '{key}' supplied: it must be an "
                      "integer") from None


def number(value: Any, key: str) -> float:
    """A finite metric value (modelog's events hold no NaN or infinity)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise invalid(f"invalid value {value!r} for metric '{key}': it must be a number") \
            from None
    if not math.isfinite(v):
        raise invalid(f"invalid value {value!r} for metric '{key}': modelog records only finite "
                      "metric values (NaN and infinity are refused; see the README)")
    return v


def check_key(key: Any, what: str) -> str:
    """A param, metric or tag key: 1-250 characters, no path tricks."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
        raise invalid(f"invalid {what} name {key!r}: it must be a string of 1-{MAX_KEY} "
                      "characters")
    if key.startswith("/") or ".." in key.split("/"):
        raise invalid(f"invalid {what} name {key!r}: it must not start with '/' or contain '..'")
    return key


def check_name(name: str, what: str) -> str:
    """An experiment, model or alias name modelog's events accept."""
    if not _NAME.fullmatch(name):
        raise invalid(f"invalid {what} name {name!r}: modelog names are 1-128 letters, digits, "
                      "'.', '_' or '-', starting with a letter or digit")
    return name


def tags_of(args: dict[str, Any], key: str = "tags") -> dict[str, str]:
    """``[{"key": k, "value": v}, ...]`` as a dict, checked against MLflow's limits."""
    out: dict[str, str] = {}
    for item in args.get(key) or []:
        if not isinstance(item, dict):
            raise invalid(f"invalid {key} entry {item!r}: expected {{'key': ..., 'value': ...}}")
        k = check_key(item.get("key"), "tag")
        v = item.get("value")
        v = "" if v is None else str(v)
        if len(v) > MAX_TAG_VALUE:
            raise invalid(f"tag '{k}' has a value of {len(v)} characters; the limit is "
                          f"{MAX_TAG_VALUE}")
        out[k] = v
    return out


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """MLflow's ``[{"key": k, "value": v}]`` (hidden ``modelog.*`` tags left out)."""
    return [{"key": k, "value": v} for k, v in tags.items() if not k.startswith("modelog.mlflow.")]


def experiment(fold: MlflowFold, experiment_id: str) -> Experiment:
    """The experiment with ``experiment_id`` or ``RESOURCE_DOES_NOT_EXIST``."""
    found = fold.experiments.get(experiment_id)
    if found is None:
        for exp in fold.all_experiments():
            if exp.experiment_id == experiment_id:
                return exp
        raise missing(f"No Experiment with id={experiment_id} exists")
    return found


def run(fold: MlflowFold, run_id: str) -> RunRecord:
    """The run ``run_id`` (one that has started) or ``RESOURCE_DOES_NOT_EXIST``."""
    found = fold.runs.get(run_id)
    if found is None or not found.started:
        raise missing(f"Run with id={run_id} not found")
    return found


def exp_json(e: Experiment) -> dict[str, Any]:
    """An experiment as MLflow's JSON."""
    return {"experiment_id": e.experiment_id, "name": e.name,
            "artifact_location": e.artifact_location, "lifecycle_stage": e.lifecycle,
            "creation_time": e.created_ms, "last_update_time": e.updated_ms,
            "tags": tag_list(e.tags)}
