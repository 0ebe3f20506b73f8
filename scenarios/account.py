"""Account: 100 deposits of 1 at once, with and without a lock.

The code, both the lesson's way and the asyncconc way, is in
:mod:`asyncconc.lessons.account`; ``--help`` lists the options.
"""

import sys

from asyncconc.lessons.account import main

if __name__ == "__main__":
    sys.exit(main())
