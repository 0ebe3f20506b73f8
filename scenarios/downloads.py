"""Downloads: one after another, in processes, in threads, and as coroutines.

The code, both the lesson's way and the asyncconc way, is in
:mod:`asyncconc.lessons.downloads`; ``--help`` lists the options.
"""

import sys

from asyncconc.lessons.downloads import main

if __name__ == "__main__":
    sys.exit(main())
