"""The root of modelog's exception hierarchy.

Every package has its own subclasses (``modelog.streams.errors``,
``modelog.store.errors``, ``modelog.models.errors``); all derive from
:class:`ModelogError`, so ``except modelog.ModelogError`` catches anything
modelog raises on purpose. Messages say what went wrong *and* what to do.
"""

from __future__ import annotations


class ModelogError(Exception):
    """Base class of every error modelog raises deliberately."""


class ConfigurationError(ModelogError):
    """A setting is missing or has an invalid value."""
