"""``python -m vstain``: the same command line as the ``vstain`` script."""

import sys

from vstain.cli import main

sys.exit(main())
