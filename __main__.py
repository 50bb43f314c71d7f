"""``python -m modelog`` is the ``modelog`` command."""

from modelog.cli import main

main()
