"""``python -m asyncconc``: see :mod:`asyncconc.cli`."""

import sys

from asyncconc.cli import main

sys.exit(main())
