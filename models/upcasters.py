"""Upcasters: old schema versions of events, rewritten on read to the current one.

Events are immutable, so a schema change never rewrites the log: the codec
(:func:`modelog.models.codec.decode`) applies ``upcast_<type>_vN_vM`` steps to a
record of an older ``schema_version`` until it is current, then validates it.
Each step is a pure function of the record's JSON object.

Examples
--------
>>> upcast_prediction_v1_v2({"features": {"x": 1}, "prediction": 0, "schema_version": 1})
{'schema_version': 2, 'inputs': {'x': 1}, 'output': 0, 'code_version': None}
>>> upcast_prediction_v2_v3({"inputs": {"x": 1}, "output": 0, "schema_version": 2})
{'inputs': {'x': 1}, 'output': 0, 'schema_version': 3, 'probabilities': None}
"""

from __future__ import annotations

from typing import Any

__all__ = ["UPCASTERS", "WITHHELD_V1_SECRET", "upcast_prediction_v1_v2",
           "upcast_prediction_v2_v3", "upcast_subscription_v1_v2"]

Upcaster = Any  # Callable[[dict[str, Any]], dict[str, Any]]


def upcast_prediction_v1_v2(record: dict[str, Any]) -> dict[str, Any]:
    """PredictionMade v1 -> v2: ``features`` -> ``inputs``, ``prediction`` -> ``output``."""
    out = dict(record)
    out["inputs"] = out.pop("features", {})
    out["output"] = out.pop("prediction", None)
    out.setdefault("code_version", None)
    out["schema_version"] = 2
    return out


def upcast_prediction_v2_v3(record: dict[str, Any]) -> dict[str, Any]:
    """PredictionMade v2 -> v3: no ``probabilities`` were logged.

    A v2 output that is itself a dict of class probabilities stays the output;
    label-free performance estimation reads it as before.
    """
    out = dict(record)
    out["schema_version"] = 3
    out["probabilities"] = None
    return out


WITHHELD_V1_SECRET = "withheld:v1-clear-secret"
"""``secret_ciphertext`` of an upcast v1 subscription that had a (clear) secret."""


def upcast_subscription_v1_v2(record: dict[str, Any]) -> dict[str, Any]:
    """AlertSubscriptionCreated v1 -> v2: the clear ``secret`` is dropped, never used again.

    A v1 subscription with a secret gets ``secret_ciphertext`` =
    :data:`WITHHELD_V1_SECRET`: its deliveries fail with advice to subscribe again
    rather than go out unsigned.
    """
    out = dict(record)
    secret = out.pop("secret", None)
    out["secret_ciphertext"] = WITHHELD_V1_SECRET if secret else None
    out["schema_version"] = 2
    return out


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("PredictionMade", 1): upcast_prediction_v1_v2,
    ("PredictionMade", 2): upcast_prediction_v2_v3,
    ("AlertSubscriptionCreated", 1): upcast_subscription_v1_v2,
}
"""``(type, from_version) -> function`` returning the record at ``from_version + 1``."""
