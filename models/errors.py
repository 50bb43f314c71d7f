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
    """A model artifact's SHA-256 differs from the one its registry event recorded.

    Raised *before* anything is deserialized.

    Examples
    --------
    >>> print(ArtifactDigestMismatch("ab" * 32, "cd" * 32))  # doctest: +ELLIPSIS
    model artifact digest mismatch: expected abab...ab, got cdcd...cd. ...
    """

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"model artifact digest mismatch: expected {expected}, got {actual}. "
            "The bytes are not the registered artifact (corrupted, truncated or tampered "
            "with); refusing to load them -- fetch the artifact again from the store."
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
    "ProfileError",
    "SearchError",
    "SearchSpaceError",
    "UnknownEventTypeError",
    "UnknownFlavorError",
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
        shown = repr(value)
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


class MonitorConfigError(ModelsError, ValueError):
    """A monitor configuration (e.g. a ``MonitorConfigured.config``) is invalid.

    Attributes
    ----------
    field, value, rule
        The setting, its value and the rule it breaks.
    """

    def __init__(self, field: str, value: Any, rule: str, model: str | None = None) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        self.model = model
        where = f" of model {model!r}" if model else ""
        shown = repr(value)
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        super().__init__(
            f"monitor setting {field!r}{where} = {shown} is invalid: {rule}; the configuration "
            "was not applied -- send a corrected MonitorConfigured event."
        )
