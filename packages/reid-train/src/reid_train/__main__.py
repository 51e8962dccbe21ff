"""``python -m reid_train`` / ``accelerate launch -m reid_train``: the ``reid-train`` command."""

import sys

from .cli import main

sys.exit(main())
