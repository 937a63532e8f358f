"""``python -m screening.cli``: the same as the ``screening`` command."""

import sys

from screening.cli import main

sys.exit(main())
