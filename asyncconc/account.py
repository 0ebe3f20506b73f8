"""A bank account guarded by an :class:`asyncio.Lock`, and the unsafe one.

The lesson's account loses money when 100 threads deposit 1 at once: each
thread reads the balance, sleeps (the "processing time"), then writes its
stale result back. Coroutines only switch at ``await``, but an ``await``
between the read and the write is exactly where the lesson's ``sleep`` sits,
so the race is the same. :class:`Account` holds its lock across the whole
read-await-write step; :class:`UnsafeAccount` does not, and loses updates.

Amounts are exact: ``int`` (think cents) or :class:`decimal.Decimal`.
Floats, booleans, non-finite decimals, zero and negative amounts raise
:class:`~asyncconc.InvalidAmountError` (also a :class:`ValueError`) before
anything is locked or changed.

Consistency: every balance change happens after the last ``await`` of an
operation, with no ``await`` between the writes of a transfer, so any
coroutine reading :attr:`Account.balance` sees either the state before an
operation or after it, never half a transfer. Cancelling an operation while
it waits (for a lock or in ``processing``) changes nothing.

Deadlock: :meth:`Account.transfer` takes both accounts' locks in the order
of a per-account serial number given out at creation, so ``a -> b`` and
``b -> a`` running at once take the locks in the same order and cannot each
hold the lock the other one waits for.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from decimal import Decimal

from asyncconc._errors import AccountError, InsufficientFundsError, InvalidAmountError

__all__ = ["Account", "Amount", "Processing", "UnsafeAccount"]

Amount = int | Decimal
"""An exact amount: ``int`` (for example cents) or :class:`~decimal.Decimal`."""

Processing = Callable[[], Awaitable[object]]
"""Awaited between reading a balance and writing the new one."""

_serials = itertools.count(1)


def _check_amount(amount: object, what: str = "amount") -> Amount:
    """``amount`` if it is a positive exact number; else InvalidAmountError."""
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        hint = (
            " (floats are inexact; use int cents or Decimal)" if isinstance(amount, float) else ""
        )
        raise InvalidAmountError(
            f"{what} must be an int or a Decimal, not {type(amount).__name__} {amount!r}{hint}"
        )
    if isinstance(amount, Decimal) and not amount.is_finite():
        raise InvalidAmountError(f"{what} must be a finite number, not {amount!r}")
    if amount <= 0:
        raise InvalidAmountError(f"{what} must be positive, not {amount}")
    return amount


def _check_opening(balance: object) -> Amount:
    if balance == 0 and isinstance(balance, int | Decimal) and not isinstance(balance, bool):
        return balance
    return _check_amount(balance, "opening balance")


async def _no_processing() -> None:
    return None


class Account:
    """A balance changed only while holding the account's lock.

    ``balance``: the opening balance, 0 or a positive exact amount.
    ``name``: shown in error messages and ``repr``.
    ``processing``: an async callable awaited inside each operation between
    reading the balance and writing the new one; it stands for the
    lesson's ``sleep(0.01)`` "processing time" and lets tests put any
    ``await`` (a sleep, an event) in the critical section. By default the
    operation does not yield there.

    The lock belongs to the event loop that first waits on it, like any
    :class:`asyncio.Lock`: use one account from one loop.
    """

    def __init__(
        self,
        balance: Amount = 0,
        *,
        name: str | None = None,
        processing: Processing | None = None,
    ) -> None:
        self._balance: Amount = _check_opening(balance)
        self._serial = next(_serials)
        self.name = name if name is not None else f"account-{self._serial}"
        self._processing: Processing = processing or _no_processing
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} balance={self._balance}>"

    @property
    def balance(self) -> Amount:
        """The balance after the last completed operation (never a half-done one)."""
        return self._balance

    @property
    def locked(self) -> bool:
        """Whether an operation currently holds this account's lock."""
        return self._lock.locked()

    async def deposit(self, amount: Amount) -> Amount:
        """Add ``amount``; return the new balance.

        Raises :class:`~asyncconc.InvalidAmountError` for a bad amount.
        """
        amount = _check_amount(amount)
        async with self._lock:
            new_balance = self._balance + amount
            await self._processing()
            self._balance = new_balance
            return new_balance

    async def withdraw(self, amount: Amount) -> Amount:
        """Take ``amount`` out; return the new balance.

        Raises :class:`~asyncconc.InsufficientFundsError` (nothing changes)
        when the balance is smaller than ``amount``, and
        :class:`~asyncconc.InvalidAmountError` for a bad amount.
        """
        amount = _check_amount(amount)
        async with self._lock:
            balance = self._balance
            if balance < amount:
                raise InsufficientFundsError(
                    f"cannot withdraw {amount} from {self.name!r}: the balance is {balance}"
                )
            await self._processing()
            self._balance = balance - amount
            return self._balance

    async def transfer(self, to: Account, amount: Amount) -> None:
        """Move ``amount`` from this account to ``to``, all or nothing.

        Both locks are held for the whole transfer, taken in creation order
        (see the module docstring), so opposite transfers cannot deadlock.
        This account's ``processing`` is awaited once, before any write.

        Raises :class:`~asyncconc.InsufficientFundsError` (nothing changes),
        :class:`~asyncconc.InvalidAmountError`, or
        :class:`~asyncconc.AccountError` when ``to`` is this account.
        """
        amount = _check_amount(amount)
        if not isinstance(to, Account):
            raise TypeError(f"can only transfer to an Account, not {type(to).__name__}")
        if to is self:
            raise AccountError(f"cannot transfer from {self.name!r} to itself")
        first, second = (self, to) if self._serial < to._serial else (to, self)
        async with first._lock, second._lock:
            balance = self._balance
            if balance < amount:
                raise InsufficientFundsError(
                    f"cannot transfer {amount} from {self.name!r} to {to.name!r}: "
                    f"the balance is {balance}"
                )
            await self._processing()
            # No await between these two writes: nobody sees half a transfer.
            self._balance = balance - amount
            to._balance = to._balance + amount


class UnsafeAccount:
    """The lesson's unprotected account, as coroutines: it loses updates.

    :meth:`deposit` reads the balance, awaits ``processing``, then writes
    what it computed before the ``await``. Deposits whose read happens while
    another deposit is suspended in ``processing`` overwrite each other.
    With ``processing`` waiting on an :class:`asyncio.Barrier` of *n* parties,
    *n* concurrent deposits of 1 all read 0 before any writes, and the
    balance ends at 1 instead of *n*: the loss is certain, not luck.

    Kept for the account scenario and its tests; do not use it for money.
    """

    def __init__(self, balance: Amount = 0, *, processing: Processing | None = None) -> None:
        self._balance: Amount = _check_opening(balance)
        self._processing: Processing = processing or _no_processing

    def __repr__(self) -> str:
        return f"<UnsafeAccount balance={self._balance}>"

    @property
    def balance(self) -> Amount:
        return self._balance

    async def deposit(self, amount: Amount) -> Amount:
        """Add ``amount`` without a lock: read, await ``processing``, write."""
        amount = _check_amount(amount)
        new_balance = self._balance + amount
        await self._processing()
        self._balance = new_balance
        return new_balance
