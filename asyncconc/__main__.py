"""``python -m asyncconc``: see :mod:`asyncconc.cli`."""

from asyncconc.cli import run

run()
