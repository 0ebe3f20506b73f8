"""The GIL: CPU-bound loops in threads get no speedup; worker processes do.

The code, both the lesson's way and the asyncconc way, is in
:mod:`asyncconc.lessons.gil`; ``--help`` lists the options.
"""

import sys

from asyncconc.lessons.gil import main

if __name__ == "__main__":
    sys.exit(main())
