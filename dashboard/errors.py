"""Errors raised by :mod:`modelog.dashboard` (queries of the dashboard's pages).

May import ``modelog.errors`` only.
"""

from __future__ import annotations

from modelog.errors import ModelogError

__all__ = ["DashboardError", "DashboardQueryError"]


class DashboardError(ModelogError):
    """Base class of errors from :mod:`modelog.dashboard`."""


class DashboardQueryError(DashboardError, ValueError):
    """A dashboard query got an argument it cannot use (names the argument and the rule)."""
