"""Promotion and rollback policy commands: ``modelog policy promotion ...``.

Top layer: may import all of modelog.
"""

from __future__ import annotations

import typer

__all__ = ["promotion_policy_app"]

promotion_policy_app = typer.Typer(
    help="A model's promotion and automatic rollback policy, stored as PromotionPolicySet "
         "events.", no_args_is_help=True)
