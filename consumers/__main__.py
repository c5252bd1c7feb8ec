"""``python -m consumers`` is the ``alertbroker`` command."""

from consumers.cli import entry

entry()
