"""``python -m reid_eval`` is the ``reid-eval`` command."""

import sys

from .cli import main

sys.exit(main())
