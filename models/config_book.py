"""The monitor configurations in force, per model and per model version (a pure fold).

A ``MonitorConfigured`` event sets settings of a model (``model_version``
``None``) or of one version, on top of what was in force: a version's
configuration is the model's with the version's own settings applied. The
reserved key ``"reset": true`` first drops the settings of its target -- of
the whole model (its versions' too) or of one version -- so
``{"reset": true}`` alone returns to the defaults. :class:`ConfigBook` is the
one place that applies these rules: the serving monitor keeps one, and
``modelog monitor show`` replays the ledger's events into another.
Imports only :mod:`modelog.models`.

Examples
--------
>>> book = ConfigBook()
>>> _ = book.apply("churn", None, {"psi_threshold": 0.3})
>>> _ = book.apply("churn", 2, {"check_every": 50})
>>> book.config("churn", 2).drift.psi_threshold, book.config("churn", 2).drift.check_every
(0.3, 50)
>>> book.config("churn", 1).drift.check_every
100
>>> book.settings("churn", 2)
{'psi_threshold': 0.3, 'check_every': 50}
>>> _ = book.apply("churn", None, {"reset": True})
>>> book.config("churn", 2) == book.default
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mypy_extensions import mypyc_attr

from modelog.models.errors import MonitorConfigError
from modelog.models.monitor_config import MonitorConfig, parse_monitor_config

__all__ = ["RESET", "ConfigBook", "split_reset"]

RESET = "reset"
"""The reserved key of a ``MonitorConfigured.config`` that drops the target's settings first."""


def split_reset(config: Mapping[str, Any], model: str | None = None
                ) -> tuple[bool, dict[str, Any]]:
    """``(reset?, the other settings)`` of a configuration payload.

    Raises
    ------
    MonitorConfigError
        When ``reset`` is not a boolean.
    """
    if not isinstance(config, Mapping):
        raise MonitorConfigError("", config, "must be a mapping of monitor settings", model)
    rest = {str(k): v for k, v in config.items() if k != RESET}
    reset = config.get(RESET, False)
    if not isinstance(reset, bool):
        raise MonitorConfigError(RESET, reset, "must be true or false", model)
    return reset, rest


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class ConfigBook:
    """Configurations per model and per version over a ``default`` (see the module).

    Parameters
    ----------
    default
        The configuration of a model nobody configured.
    """

    def __init__(self, default: MonitorConfig | None = None) -> None:
        self.default = default or MonitorConfig()
        self._models: dict[str, MonitorConfig] = {}
        self._model_settings: dict[str, dict[str, Any]] = {}
        # (model, version) -> the version's settings, in order
        self._versions: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
        self._cache: dict[tuple[str, int], MonitorConfig] = {}

    def config(self, model: str, version: int | None = None) -> MonitorConfig:
        """The configuration in force for ``model`` (its ``version`` when given)."""
        base = self._models.get(model, self.default)
        if version is None or (model, version) not in self._versions:
            return base
        cached = self._cache.get((model, version))
        if cached is None:
            cached = base
            for settings in self._versions[(model, version)]:
                cached = parse_monitor_config(settings, base=cached, model=model)
            self._cache[(model, version)] = cached
        return cached

    def settings(self, model: str, version: int | None = None) -> dict[str, Any]:
        """The settings set for ``model`` (and its ``version``), as written, later ones winning."""
        out = dict(self._model_settings.get(model, {}))
        if version is not None:
            for settings in self._versions.get((model, version), []):
                out.update(settings)
        return out

    def versions(self, model: str) -> list[int]:
        """The versions of ``model`` with settings of their own."""
        return sorted(v for m, v in self._versions if m == model)

    def apply(self, model: str, version: int | None, config: Mapping[str, Any]
              ) -> MonitorConfig:
        """Apply one ``MonitorConfigured`` payload; the target's new configuration.

        Raises
        ------
        MonitorConfigError
            When the payload is invalid; nothing changes.
        """
        reset, settings = split_reset(config, model)
        if version is None:
            base = self.default if reset else self._models.get(model, self.default)
            new = parse_monitor_config(settings, base=base, model=model)
            # every version's own settings must still hold on the new model configuration
            kept = {} if reset else {k: v for k, v in self._versions.items() if k[0] == model}
            for chain in kept.values():
                cfg = new
                for s in chain:
                    cfg = parse_monitor_config(s, base=cfg, model=model)
            for key in [k for k in self._versions if k[0] == model]:
                self._cache.pop(key, None)
                if reset:
                    del self._versions[key]
            self._models[model] = new
            old = {} if reset else self._model_settings.get(model, {})
            self._model_settings[model] = {**old, **settings}
            return new
        key = (model, version)
        chain = [] if reset else list(self._versions.get(key, []))
        cfg = self._models.get(model, self.default)
        for s in [*chain, settings]:
            cfg = parse_monitor_config(s, base=cfg, model=model)
        chain.append(settings)
        self._versions[key] = chain
        self._cache[key] = cfg
        return cfg
