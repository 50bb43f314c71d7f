"""``python -m modelog.cli`` runs the command line, like ``python -m modelog``."""

from modelog.cli import main

main()
