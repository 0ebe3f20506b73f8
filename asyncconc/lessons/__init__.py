"""The lesson's scenarios, each measured the old way and the asyncconc way.

One module per scenario, each with ``measure(...) -> list[Timing]`` and a
``main(argv)`` that prints the comparison. ``scenarios/*.py`` are thin
launchers over these, and ``python -m asyncconc demo`` runs them all (the
non-GUI ones) into one table. They live in the package so that the demo
works from an installed asyncconc, not only from a checkout.

=======================  ====================================================
``downloads``            sequential vs processes vs threads vs coroutines
``account``              no lock vs lock, threads and coroutines
``pingpong``             the lesson's broken processes vs queues vs a pipe
``gil``                  CPU loops in threads vs worker processes
``divide_and_conquer``   1..N: one process vs 8 Processes + Queue vs LoopPool
=======================  ====================================================

The GUI scenario is :mod:`asyncconc.gui` (``scenarios/gui.py``).
"""

from asyncconc.lessons._table import Timing, format_rows, with_speedups

__all__ = ["Timing", "format_rows", "with_speedups"]
