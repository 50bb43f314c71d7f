"""Traffic policy commands: ``modelog traffic set|show``.

Top layer: may import all of modelog.
"""

from __future__ import annotations

import typer

__all__ = ["traffic_app"]

traffic_app = typer.Typer(
    help="How predictors route a model's requests between aliases (A/B weights, shadows).",
    no_args_is_help=True)
