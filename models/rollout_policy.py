"""A model's promotion and rollback policy: the keys of ``PromotionPolicySet`` and their parser.

Used by :mod:`modelog.models.rollout` (the processor) and by the SDK, which
validates a policy before sending it. Pure: the standard library and
:mod:`modelog.models` only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from modelog.models.errors import PromotionPolicyError
from modelog.models.event_base import Scalar

__all__ = ["POLICY_KEYS", "PRODUCTION", "PromotionPolicy", "parse_promotion_policy"]

PRODUCTION = "production"
PROMOTE_ACTOR = "policy:promotion"
ROLLBACK_ACTOR = "policy:rollback"


@dataclasses.dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger is promoted and when a promoted version is rolled back.

    Attributes
    ----------
    challenger
        The alias promoted when it wins (shadow or A/B arm); default ``candidate``.
    alpha
        Significance level of the tests (two-sided p-value below it).
    min_pairs
        Labelled pairs (or A/B observations of the challenger) needed before promoting.
    min_effect
        The effect (accuracy points, or MAE units) a winner or a loser must exceed.
    promote, rollback
        Whether automatic promotion / rollback are on.
    rollback_min
        Labelled predictions of a new production before the rollback test runs.
    rollback_window
        Length of the previous version's baseline and of the new production's watch.
    max_error
        Roll back when the new production's error rate (classes) or MAE (numbers)
        over at least ``rollback_min`` predictions exceeds it (``None``: no alarm).
    cooldown_s
        At most one automatic promotion per model in this many seconds after its last
        decision (a rollback is never held back: it protects production).
    report_every
        A ``ComparisonReported`` every this many new labelled pairs.
    """

    challenger: str = "candidate"
    alpha: float = 0.05
    min_pairs: int = 500
    min_effect: float = 0.0
    promote: bool = True
    rollback: bool = True
    rollback_min: int = 200
    rollback_window: int = 5_000
    max_error: float | None = None
    cooldown_s: float = 3_600.0
    report_every: int = 100

    def as_params(self) -> dict[str, Scalar]:
        """The policy as flat scalars (what ``PromotionPolicySet.policy`` holds)."""
        return dict(dataclasses.asdict(self))


POLICY_KEYS = tuple(f.name for f in dataclasses.fields(PromotionPolicy))
"""The keys a ``PromotionPolicySet.policy`` may hold."""

_KINDS: dict[str, type] = {"challenger": str, "alpha": float, "min_pairs": int,
                           "min_effect": float, "promote": bool, "rollback": bool,
                           "rollback_min": int, "rollback_window": int, "max_error": float,
                           "cooldown_s": float, "report_every": int}
_RULES: dict[str, tuple[Any, str]] = {
    "alpha": (lambda v: 0.0 < v < 1.0, "must be in (0, 1)"),
    "min_pairs": (lambda v: 2 <= v <= 10_000_000, "must be an integer from 2 to 10,000,000"),
    "min_effect": (lambda v: v >= 0.0, "must be >= 0"),
    "rollback_min": (lambda v: 2 <= v <= 10_000_000, "must be an integer from 2 to 10,000,000"),
    "rollback_window": (lambda v: 2 <= v <= 1_000_000, "must be an integer from 2 to 1,000,000"),
    "max_error": (lambda v: v > 0.0, "must be > 0 (or empty: no alarm)"),
    "cooldown_s": (lambda v: 0.0 <= v <= 365 * 86_400, "must be from 0 to a year in seconds"),
    "report_every": (lambda v: 1 <= v <= 1_000_000, "must be an integer from 1 to 1,000,000"),
    "challenger": (lambda v: 0 < len(v) <= 128 and v != PRODUCTION,
                   "must name an alias other than production"),
}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _coerce(model: str, key: str, value: object) -> Any:
    """``value`` as the type of ``key`` (text from the command line is parsed)."""
    kind = _KINDS[key]
    if value is None or value == "":
        if key == "max_error":
            return None
        raise PromotionPolicyError(model, key, value, "must not be empty")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise PromotionPolicyError(model, key, value, "must be true or false")
    if kind is str:
        if not isinstance(value, str):
            raise PromotionPolicyError(model, key, value, "must be an alias name (text)")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PromotionPolicyError(model, key, value, f"must be a number ({kind.__name__})")
    try:
        number = float(value)
    except ValueError:
        raise PromotionPolicyError(model, key, value,
                                   f"must be a number ({kind.__name__})") from None
    if not math.isfinite(number):
        raise PromotionPolicyError(model, key, value, "must be a finite number")
    if kind is int:
        if not number.is_integer():
            raise PromotionPolicyError(model, key, value, "must be an integer")
        return int(number)
    return number


def parse_promotion_policy(model: str, data: Mapping[str, object]) -> PromotionPolicy | None:
    """The policy a ``PromotionPolicySet.policy`` sets for ``model``; ``None`` for ``{}`` (off).

    Keys left out keep their defaults; values may be text (from the command line).

    Raises
    ------
    PromotionPolicyError
        An unknown key (the valid ones are listed) or a value breaking its rule;
        the message names the model, the key, the value and the rule.

    Examples
    --------
    >>> p = parse_promotion_policy("churn", {"alpha": "0.01", "min_pairs": 300, "rollback": "off"})
    >>> p.alpha, p.min_pairs, p.rollback, p.challenger
    (0.01, 300, False, 'candidate')
    >>> parse_promotion_policy("churn", {}) is None
    True
    >>> parse_promotion_policy("churn", {"alpha": 2})
    Traceback (most recent call last):
    ...
    modelog.models.errors.PromotionPolicyError: promotion policy of 'churn': alpha = 2 is \
invalid: must be in (0, 1). Fix it and set the policy again (`modelog policy promotion set`), \
or reset it (`modelog policy promotion reset`).
    """
    if not data:
        return None
    unknown = sorted(str(k) for k in data if k not in _KINDS)
    if unknown:
        raise PromotionPolicyError(model, unknown[0], data[unknown[0]],
                                   f"unknown key; the valid keys are {', '.join(POLICY_KEYS)}")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        value = _coerce(model, key, raw)
        if value is not None and key in _RULES and not _RULES[key][0](value):
            raise PromotionPolicyError(model, key, raw, _RULES[key][1])
        values[key] = value
    return PromotionPolicy(**values)


