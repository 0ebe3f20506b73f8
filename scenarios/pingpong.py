"""Ping/pong: the lesson's broken processes, then two ways that alternate.

The code, both the lesson's way and the asyncconc way, is in
:mod:`asyncconc.lessons.pingpong`; ``--help`` lists the options.
"""

import sys

from asyncconc.lessons.pingpong import main

if __name__ == "__main__":
    sys.exit(main())
