"""``python -m consumers`` is the ``alertbroker`` command."""

import sys

from consumers.cli import main

sys.exit(main())
