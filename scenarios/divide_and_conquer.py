"""Divide and conquer: 1 + 2 + ... + 100,000,000 on every core.

The code, both the lesson's way and the asyncconc way, is in
:mod:`asyncconc.lessons.divide_and_conquer`; ``--help`` lists the options.
"""

import sys

from asyncconc.lessons.divide_and_conquer import main

if __name__ == "__main__":
    sys.exit(main())
