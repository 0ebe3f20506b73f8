"""Distributed processes: 1 + ... + N through shared network queues and through Dask.

The code, the lesson's ``multiprocessing.managers`` way and the DaskPool
way, is in :mod:`asyncconc.lessons.distributed`; ``--help`` lists the options.
(Not named ``distributed.py``: Python puts a script's folder first on
``sys.path``, where that name would shadow the ``distributed`` package for
the script, its spawned workers and mypy.)
"""

import sys

from asyncconc.lessons.distributed import main

if __name__ == "__main__":
    sys.exit(main())
