"""Errors raised by :mod:`modelog.models` (pure ML code: detectors, flavors, search).

Examples
--------
>>> err = UnknownDetectorError("adwn", ("adwin", "ddm"))
>>> print(err)
unknown drift detector 'adwn'; choose one of: adwin, ddm
>>> isinstance(err, ModelsError) and isinstance(err, ValueError)
True
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from modelog.errors import ModelogError

__all__ = ["InvalidObservationError", "InvalidParameterError", "ModelsError",
           "UnknownDetectorError"]


class ModelsError(ModelogError):
    """Base class of errors from :mod:`modelog.models`."""


class UnknownDetectorError(ModelsError, ValueError):
    """A detector name is not one modelog knows; the message lists the valid names."""

    def __init__(self, name: str, valid: Iterable[str]) -> None:
        self.name = name
        self.valid = tuple(valid)
        super().__init__(f"unknown drift detector {name!r}; choose one of: {', '.join(self.valid)}")


class InvalidParameterError(ModelsError, ValueError):
    """A hyperparameter has a value the component cannot use.

    Attributes
    ----------
    component, parameter, value, rule
        Which detector or monitor, which parameter, its value and the rule it breaks.
    """

    def __init__(self, component: str, parameter: str, value: Any, rule: str) -> None:
        self.component = component
        self.parameter = parameter
        self.value = value
        self.rule = rule
        super().__init__(
            f"{component}: parameter {parameter!r} = {value!r} is invalid: {rule}. "
            "Fix the configuration and create the monitor again."
        )


class InvalidObservationError(ModelsError, ValueError):
    """An observation fed to a monitor is not a value it can learn from.

    Attributes
    ----------
    component, value, rule
        Which monitor, the offending value and the rule it breaks.
    """

    def __init__(self, component: str, value: Any, rule: str) -> None:
        self.component = component
        self.value = value
        self.rule = rule
        super().__init__(
            f"{component}: observation {value!r} is invalid: {rule}. "
            "Skip or fix this value before calling update()."
        )


# -- flavors, evaluation and search (modelog.models.flavors/evaluation/search) -------------
class ArtifactDigestMismatch(ModelsError, ValueError):  # noqa: N818 -- the agreed name
    """An artifact's SHA-256 differs from the digest it is known by.

    The one error for a digest mismatch, wherever it is found: a model's bytes
    against its registry event (raised *before* anything is deserialized), or a
    stored file against its content address (``where`` names the file).

    Examples
    --------
    >>> print(ArtifactDigestMismatch("ab" * 32, "cd" * 32))  # doctest: +ELLIPSIS
    artifact digest mismatch: expected abab...ab, got cdcd...cd. ...
    >>> print(ArtifactDigestMismatch("ab" * 32, "cd" * 32, where="/a/b"))  # doctest: +ELLIPSIS
    artifact digest mismatch in /a/b: expected abab...ab, got cdcd...cd. ...
    """

    def __init__(self, expected: str, actual: str, *, where: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        self.where = where
        place = f" in {where}" if where else ""
        advice = ("Delete the file and store the artifact again from its source." if where
                  else "Refusing to load them -- fetch the artifact again from the store.")
        super().__init__(
            f"artifact digest mismatch{place}: expected {expected}, got {actual}. "
            "The bytes are not the recorded artifact (corrupted, truncated or tampered "
            f"with). {advice}"
        )


class UnknownFlavorError(ModelsError, ValueError):
    """No model flavor matches a model, or a flavor name is not registered."""

    def __init__(self, what: str, valid: Iterable[str]) -> None:
        self.what = what
        self.valid = tuple(valid)
        super().__init__(
            f"no model flavor for {what}; known flavors: {', '.join(self.valid)}. "
            "Pass flavor= with one of them, or add one with "
            "modelog.models.flavors.register_flavor()."
        )


class UntrustedTypesError(ModelsError):
    """A skops artifact contains types outside the trusted modules; nothing was loaded."""

    def __init__(self, types: Iterable[str], trusted_prefixes: Iterable[str]) -> None:
        self.types = list(types)
        self.trusted_prefixes = tuple(trusted_prefixes)
        super().__init__(
            f"refusing to load: the artifact contains types outside the trusted modules "
            f"({', '.join(self.trusted_prefixes)}): {', '.join(self.types)}. Loading them may "
            f"run their code; if you trust them, pass trusted={self.types!r} to load()."
        )


class ModelSerializationError(ModelsError):
    """A model could not be serialized with the chosen flavor."""

    def __init__(self, flavor: str, model_type: type, cause: BaseException) -> None:
        self.flavor = flavor
        self.model_type = model_type
        self.cause = cause
        super().__init__(
            f"could not serialize a {model_type.__module__}.{model_type.__qualname__} with the "
            f"{flavor!r} flavor: {type(cause).__name__}: {cause}. Check that the model is of "
            "that flavor (or pass another flavor=) and holds no lambdas or open handles."
        )


class ModelLoadError(ModelsError):
    """Artifact bytes could not be turned back into a model."""

    def __init__(self, flavor: str, cause: BaseException) -> None:
        self.flavor = flavor
        self.cause = cause
        super().__init__(
            f"could not load the {flavor!r} artifact: {type(cause).__name__}: {cause}. Check "
            "that the bytes were written by modelog.models.flavors.dump with this flavor, and "
            "that the model (if given) has the saved architecture."
        )


class _FieldError(ModelsError, ValueError):
    """An input field has an unusable value: names the field, the value and the rule."""

    context = "input"

    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{self.context}: {field!r} = {value!r} is invalid: {rule}.")


class EvaluationError(_FieldError):
    """Evaluation input (the splits) is unusable."""

    context = "evaluation"


class SearchSpaceError(_FieldError):
    """A search grid, space or option is unusable."""

    context = "search space"


class SearchError(ModelsError):
    """A hyperparameter-search trial returned something the search cannot rank."""


__all__ += [
    "ArtifactDigestMismatch",
    "EvaluationError",
    "EventDecodeError",
    "EventValidationError",
    "ModelLoadError",
    "ModelSerializationError",
    "MonitorConfigError",
    "OnlineModelError",
    "ProfileError",
    "SearchError",
    "SearchSpaceError",
    "UnknownEventTypeError",
    "UnknownFlavorError",
    "UnsupportedEventError",
    "UntrustedTypesError",
]


class EventValidationError(ModelsError, ValueError):
    """An event failed validation before leaving the application.

    Attributes
    ----------
    event_type, field, value, rule
        Which event, which field (a path such as ``inputs.age``), the offending
        value and the rule it broke.
    """

    def __init__(self, event_type: str, field: str, value: Any, rule: str) -> None:
        self.event_type = event_type
        self.field = field
        self.value = value
        self.rule = rule
        try:
            shown = repr(value)
        except ValueError:  # an int too long to print (Python's 4,300-digit limit)
            shown = f"<an integer of more than {sys.get_int_max_str_digits()} digits>"
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(
            f"invalid {event_type}: field {field!r} = {shown} breaks the rule: {rule}. "
            "Fix the value before logging; nothing was sent."
        )


class EventDecodeError(ModelsError):
    """A record on a topic is not a valid modelog event (it goes to the dead-letter topic)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnknownEventTypeError(EventDecodeError):
    """A record names an event type this version of modelog does not know."""


class ProfileError(ModelsError, ValueError):
    """A profile or PSI computation got unusable arguments (:mod:`modelog.models.profile`)."""


class UnsupportedEventError(ModelsError, TypeError):
    """The serving monitor was given an event that is not a prediction or a label."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(
            f"ServingMonitor takes PredictionMade, LabelObserved, MonitorConfigured and "
            f"ModelVersionRegistered events, not {type_name}; route other events elsewhere "
            "(the worker dead-letters them)."
        )


COMMAND_LINE = "<command line>"
"""The ``source`` of a :class:`MonitorConfigError` in settings typed on a command line."""


class MonitorConfigError(ModelsError, ValueError):
    """A monitor configuration (a ``MonitorConfigured.config`` or a file) is invalid.

    Attributes
    ----------
    field, value, rule
        The setting (``""`` when the whole document is wrong), its value and the rule it breaks.
    model
        The model a ``MonitorConfigured`` event configured (``None`` otherwise).
    source
        The file the configuration came from (``None`` for an event).

    Examples
    --------
    >>> print(MonitorConfigError("check_every", 0, "must be >= 1", source="strict.toml"))
    strict.toml: monitor setting 'check_every' = 0 is invalid: must be >= 1; fix the file and \
run again.
    """

    def __init__(self, field: str, value: Any, rule: str, model: str | None = None, *,
                 source: str | None = None) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        self.model = model
        self.source = source
        where = f" of model {model!r}" if model else ""
        shown = repr(value)
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        what = f"monitor setting {field!r}{where} = {shown} is invalid: " if field else ""
        if source is None:
            super().__init__(f"{what}{rule}; the configuration was not applied -- send a "
                             "corrected MonitorConfigured event.")
        elif source == COMMAND_LINE:
            super().__init__(f"{what}{rule}; nothing was sent: fix it and run the command "
                             "again.")
        else:
            super().__init__(f"{source}: {what}{rule}; fix the file and run again.")


class OnlineModelError(ModelsError):
    """An online model could not be started or restored; the message says why and what to do."""


class WebhookTargetError(ModelsError, ValueError):
    """A webhook URL is refused: not http(s), not resolvable, or reaching a forbidden address.

    Attributes
    ----------
    url
        The refused URL.
    address
        The forbidden address it resolved to (``None`` when it was refused for another reason).
    rule
        What the address is (``"a loopback address"``, ...) or why the URL is refused.
    """

    def __init__(self, url: str, address: str | None, rule: str, message: str) -> None:
        self.url = url
        self.address = address
        self.rule = rule
        super().__init__(message)


class WebhookSecretError(ModelsError):
    """A subscription's encrypted signing secret cannot be opened with this deployment's key."""


__all__ += ["WebhookSecretError", "WebhookTargetError"]


class OnlineSpecError(ModelsError, ValueError):
    """A River model cannot be written or built as an online-model specification.

    Attributes
    ----------
    name
        The class (``module.Name``) or value that is not allowed.
    allowed
        The River modules of the allow-list (:data:`modelog.models.online_spec.ALLOWED`).
    where
        Which parameter of which estimator holds it (``""``: the top level).
    reason
        Why, when it is not "not on the allow-list".

    Examples
    --------
    >>> print(OnlineSpecError("mylib.Model", ["river.linear_model"], ""))  # doctest: +ELLIPSIS
    river class 'mylib.Model' is not on modelog's online-model allow-list (river.linear_model...
    """

    def __init__(self, name: str, allowed: Iterable[str], where: str, reason: str = "") -> None:
        self.name = name
        self.allowed = tuple(allowed)
        self.where = where
        self.reason = reason
        at = f" (at {where.rstrip('.')})" if where and where.rstrip(".") != name else ""
        what = (f"cannot express {name!r}{at} as an online-model specification: {reason}"
                if reason else
                f"river class {name!r}{at} is not on modelog's online-model allow-list "
                f"({', '.join(self.allowed)}; see modelog.models.online_spec.ALLOWED)")
        super().__init__(
            f"{what}. Build the model from allow-listed River classes, or opt in to pickles: "
            "register it with register_model(..., flavor='river', online=True) and start the "
            "workers with MODELOG_ONLINE_ALLOW_PICKLE=1 (only if everyone who can write to the "
            "broker and the artifact store is trusted).")


__all__ += ["OnlineSpecError"]


class TrainerConfigError(ModelsError, ValueError):
    """A trainer mapping (``model=package.module:function``) of a runner is malformed."""


class TrainerNotConfiguredError(ModelsError, LookupError):
    """No trainer is configured on this runner for a model (events never name code)."""


class RetrainJobError(ModelsError):
    """A retrain job could not produce a candidate; the message says why and what to do."""


__all__ += ["RetrainJobError", "TrainerConfigError", "TrainerNotConfiguredError"]


class RetrainPolicyError(ModelsError, ValueError):
    """A model's retrain policy (``RetrainPolicySet.policy``) has a bad key or value.

    Attributes
    ----------
    model, field, value, rule
        Which model, which policy key, its value and the rule it breaks.
    """

    def __init__(self, model: str, field: str, value: Any, rule: str) -> None:
        self.model = model
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(
            f"retrain policy of {model!r}: {field} = {value!r} is invalid: {rule}. "
            "Fix it and set the policy again (`modelog policy retrain set`), or reset it "
            "(`modelog policy retrain reset`).")


__all__ += ["RetrainPolicyError"]


class ComparisonError(ModelsError, ValueError):
    """A statistical comparison cannot be computed from the data given (too few, bad input)."""


class PromotionPolicyError(ModelsError, ValueError):
    """A model's promotion policy (``PromotionPolicySet.policy``) has a bad key or value.

    Attributes
    ----------
    model, field, value, rule
        Which model, which policy key, its value and the rule it breaks.
    """

    def __init__(self, model: str, field: str, value: Any, rule: str) -> None:
        self.model, self.field, self.value, self.rule = model, field, value, rule
        super().__init__(
            f"promotion policy of {model!r}: {field} = {value!r} is invalid: {rule}. "
            "Fix it and set the policy again (`modelog policy promotion set`), or reset it "
            "(`modelog policy promotion reset`).")


__all__ += ["ComparisonError", "PromotionPolicyError"]
