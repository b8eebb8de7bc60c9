"""``python -m optimizer.cli``: the same as the ``scalefed`` command."""

from __future__ import annotations

import sys

from optimizer.cli import main

sys.exit(main())
