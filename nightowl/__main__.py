"""``python -m nightowl`` runs the ``nightowl`` command."""

from nightowl.cli import main

main()
