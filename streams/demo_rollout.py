"""The quickstart's rollout: serve through the registry, shadow the candidate, watch the policy.

``modelog demo --retrain --auto-promote`` serves every request through an SDK
predictor (:meth:`~modelog.streams.predictor.PredictorCalls.predictor`), the
way an application would: the version behind ``production`` answers and is
logged with the version that answered. :class:`RolloutServing` also plays the
operator's part of a rollout: once the retrain runner gave a version the
``candidate`` alias it routes the model's traffic with the candidate in shadow
(``client.set_traffic``), and once the promotion policy moved ``production`` to
it, back to production alone. The decisions themselves -- promotion when the
candidate wins on the shadowed pairs, rollback when the promoted version does
worse -- are the worker's (:mod:`modelog.models.rollout`), each a
``RolloutDecided`` event; :func:`wait_for_decisions` reads them back from the
projection for the demo to print.

Imports :mod:`modelog.streams` and :mod:`modelog.store`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from modelog.config import Settings

__all__ = ["Decision", "RolloutServing", "promotion_policy", "wait_for_decisions"]


def promotion_policy(cooldown_s: float = 2.0) -> dict[str, Any]:
    """The demo's promotion policy: promote a candidate that wins on 300+ shadowed pairs at
    1 % significance; roll back a promoted version whose error exceeds 50 %, or that does
    worse than its predecessor's baseline."""
    return {"challenger": "candidate", "alpha": 0.01, "min_pairs": 300, "rollback": True,
            "rollback_min": 200, "max_error": 0.5, "cooldown_s": cooldown_s,
            "report_every": 100}


class RolloutServing:
    """Answer the demo's requests through a predictor and steer the traffic policy.

    Parameters
    ----------
    client
        A connected :class:`~modelog.streams.sdk.Client`.
    model
        The model served.
    echo
        Prints what happens (the shadow set, the promotion seen).
    """

    def __init__(self, client: Any, model: str, echo: Callable[[str], object]) -> None:
        self.client = client
        self.model = model
        self.echo = echo
        self.predictor = client.predictor(model)
        self.shadowing: int | None = None  # the candidate version in shadow
        self.promoted: int | None = None
        self.rolled_back_to: int | None = None
        self._checked = 0.0

    def settled(self, rollback: bool) -> bool:
        """Whether the policy decided what the demo waits for (promotion, and rollback)."""
        return self.promoted is not None and (not rollback or self.rolled_back_to is not None)

    def serve(self, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
        """Answer ``rows`` (one request each, routed by ``keys``); their prediction ids."""
        self._steer()
        return [s.prediction_id for s in self.predictor.serve_many(list(rows), keys=list(keys))]

    def _steer(self) -> None:
        now = time.monotonic()
        if now - self._checked < 0.25:
            return
        self._checked = now
        candidate = self.predictor.version_of("candidate")
        production = self.predictor.version_of("production")
        if candidate is None or production is None:
            return
        if self.shadowing is None and candidate != production:
            self.client.set_traffic(self.model, {"production": 1.0}, shadows=["candidate"],
                                    reason=f"demo: shadow the retrained candidate v{candidate}")
            self.shadowing = candidate
            self.echo(f"traffic    {self.model}: production v{production}, candidate "
                      f"v{candidate} in shadow")
        elif self.shadowing is not None and self.promoted is None and production == candidate:
            self.promoted = production
            self.client.set_traffic(self.model, {"production": 1.0},
                                    reason=f"demo: v{production} promoted, shadow no more")
            self.echo(f"traffic    {self.model}: v{production} promoted to production by the "
                      "policy; shadow off")
        elif self.promoted is not None and self.rolled_back_to is None \
                and production != self.promoted:
            self.rolled_back_to = production
            self.echo(f"traffic    {self.model}: production rolled back to v{production} by "
                      "the policy")

    def close(self) -> None:
        """Stop following the registry."""
        self.predictor.close()


@dataclasses.dataclass(frozen=True)
class Decision:
    """One ``RolloutDecided`` of the model, as the demo prints it."""

    action: str
    from_version: int | None
    to_version: int
    reason: str
    outcome: str

    def line(self, model: str) -> str:
        """``rollout   promote demo-churn v1 -> v2 (applied): ...``."""
        return (f"rollout    {self.action} {model} v{self.from_version} -> v{self.to_version} "
                f"({self.outcome}): {self.reason}")


def wait_for_decisions(settings: Settings, model: str, since: dt.datetime,
                       actions: Sequence[str], *, timeout: float,
                       poll: float = 1.0) -> list[Decision]:
    """The ``RolloutDecided`` events of ``model`` since ``since``, once ``actions`` (e.g.
    ``["promote", "rollback"]``, in that order) were all decided and applied, or at the
    timeout (what there was then)."""
    from modelog.store.errors import StoreError
    from modelog.store.reader import Reader

    reader = Reader(settings)
    deadline = time.monotonic() + timeout
    sql = ("SELECT action, from_version, to_version, reason, outcome FROM rollout_decisions "
           "WHERE model = ? AND time >= ? ORDER BY time")
    while True:
        try:
            rows = reader.query(sql, [model, since]).to_pylist()
        except StoreError:
            rows = []
        found = [Decision(r["action"], r["from_version"], int(r["to_version"]),
                          str(r["reason"]), str(r["outcome"])) for r in rows]
        done = [d.action for d in found if d.outcome == "applied"]
        if done[:len(actions)] == list(actions) or time.monotonic() >= deadline:
            return found
        time.sleep(poll)

