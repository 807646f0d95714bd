"""``python -m ssad.cli``: the ``ssad`` command."""

import sys

from ssad.cli import main

sys.exit(main())
