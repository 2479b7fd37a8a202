"""``python -m flows`` runs the ``nightowl`` command."""

from flows.cli import main

main()
