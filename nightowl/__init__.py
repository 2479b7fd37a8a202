"""nightowl: nightly analytics for a startup's product operations.

The package is ``nightowl`` alone; its parts live at the repository's top level and are mapped in
by ``pyproject.toml``: ``nightowl.flows`` (the Prefect flows, steps and runtime), ``nightowl.tasks``
(the work, by domain), ``nightowl.schemas`` (contracts and settings models),
``nightowl.warehouse`` (the only code that knows paths), plus ``nightowl.cli`` (the ``nightowl``
command) and ``nightowl.demo`` (the demo shop's generator).
"""
