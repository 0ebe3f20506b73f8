"""Account: locking, exact amounts, deadlock-free transfers, and the unsafe variant."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncconc
from asyncconc import (
    Account,
    AccountError,
    InsufficientFundsError,
    InvalidAmountError,
    UnsafeAccount,
)


async def yield_once() -> None:
    await asyncio.sleep(0)


async def test_100_concurrent_deposits_with_await_inside_give_100() -> None:
    account = Account(processing=yield_once)
    async with asyncio.TaskGroup() as tg:
        for _ in range(100):
            tg.create_task(account.deposit(1))
    assert account.balance == 100


async def test_unsafe_deposits_lose_updates_deterministically() -> None:
    # Every deposit reads 0, then waits at the barrier until all 100 have
    # read; only then does any of them write. The result is always 1.
    barrier = asyncio.Barrier(100)
    account = UnsafeAccount(processing=barrier.wait)
    async with asyncio.TaskGroup() as tg:
        for _ in range(100):
            tg.create_task(account.deposit(1))
    assert account.balance == 1


async def test_safe_account_with_the_same_interleaving_step_gives_100() -> None:
    # The barrier trick that makes UnsafeAccount lose updates cannot even
    # line up deposits here: the lock lets one through at a time. A barrier
    # of one party is the same "wait for the others" step, passed at once.
    barrier = asyncio.Barrier(1)
    account = Account(processing=barrier.wait)
    async with asyncio.TaskGroup() as tg:
        for _ in range(100):
            tg.create_task(account.deposit(1))
    assert account.balance == 100


async def test_deposit_waits_for_lock() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    account = Account(processing=hold)
    first = asyncio.create_task(account.deposit(5))
    await entered.wait()
    entered.clear()
    second = asyncio.create_task(account.deposit(7))
    await asyncio.sleep(0)
    assert account.locked
    assert account.balance == 0  # the first deposit has not written yet
    assert not entered.is_set()  # the second is waiting for the lock
    release.set()
    assert await first == 5
    assert await second == 12


async def test_withdraw_insufficient_funds_changes_nothing() -> None:
    account = Account(100, name="alice")
    with pytest.raises(InsufficientFundsError, match=r"withdraw 150 from 'alice'.*balance is 100"):
        await account.withdraw(150)
    assert account.balance == 100
    assert await account.withdraw(100) == 0


async def test_transfer_moves_money_all_or_nothing() -> None:
    a, b = Account(Decimal("10.50"), name="a"), Account(name="b")
    await a.transfer(b, Decimal("0.25"))
    assert (a.balance, b.balance) == (Decimal("10.25"), Decimal("0.25"))
    with pytest.raises(InsufficientFundsError):
        await b.transfer(a, Decimal("1"))
    assert (a.balance, b.balance) == (Decimal("10.25"), Decimal("0.25"))


async def test_opposite_transfers_at_once_do_not_deadlock() -> None:
    # Both transfers are inside their critical section at the same time
    # only if they could each hold one lock; the barrier would then wait
    # forever. With lock ordering the second waits for the first instead.
    a, b = Account(1000, processing=yield_once), Account(1000, processing=yield_once)
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        for _ in range(200):
            tg.create_task(a.transfer(b, 3))
            tg.create_task(b.transfer(a, 2))
    assert (a.balance, b.balance) == (800, 1200)


async def test_cancelled_operation_changes_nothing() -> None:
    entered = asyncio.Event()

    async def hold() -> None:
        entered.set()
        await asyncio.Event().wait()

    a, b = Account(10, processing=hold), Account(0)
    task = asyncio.create_task(a.transfer(b, 4))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (a.balance, b.balance) == (10, 0)
    assert not a.locked
    assert not b.locked


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (1.5, "floats are inexact"),
        (0, "must be positive"),
        (-3, "must be positive"),
        (Decimal("-0.01"), "must be positive"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (True, "not bool"),
        ("10", "not str"),
    ],
)
async def test_bad_amounts_are_refused_with_a_clear_message(amount: object, message: str) -> None:
    account = Account(5)
    for operation in (account.deposit, account.withdraw):
        with pytest.raises(InvalidAmountError, match=message):
            await operation(amount)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmountError, match=message):
        await account.transfer(Account(), amount)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):  # InvalidAmountError is a ValueError too
        await UnsafeAccount().deposit(amount)  # type: ignore[arg-type]
    assert account.balance == 5


def test_opening_balance_may_be_zero_but_not_negative_or_float() -> None:
    assert Account(0).balance == 0
    assert Account(Decimal("0.00")).balance == 0
    with pytest.raises(InvalidAmountError, match="opening balance"):
        Account(-1)
    with pytest.raises(InvalidAmountError, match="opening balance"):
        Account(0.0)  # type: ignore[arg-type]


async def test_transfer_to_itself_is_refused() -> None:
    account = Account(5, name="me")
    with pytest.raises(AccountError, match="'me' to itself"):
        await account.transfer(account, 1)
    assert account.balance == 5


# A transfer: (from index, to index, amount).
transfers = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 60)).filter(
        lambda t: t[0] != t[1]
    ),
    min_size=50,
    max_size=250,
)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    openings=st.lists(st.integers(0, 200), min_size=5, max_size=5),
    plan=transfers,
    yields=st.lists(st.integers(0, 3), min_size=1, max_size=20),
)
def test_random_concurrent_transfers_conserve_total_and_never_overdraw(
    openings: list[int], plan: list[tuple[int, int, int]], yields: list[int]
) -> None:
    total = sum(openings)
    violations: list[str] = []
    accounts: list[Account] = []
    # How often each critical section yields, drawn by hypothesis and reused
    # in turn, so the interleavings differ from example to example.
    pauses = itertools.cycle(yields)

    def check() -> None:
        balances = [a.balance for a in accounts]
        if sum(balances) != total:
            violations.append(f"total {sum(balances)} != {total}: {balances}")
        if min(balances) < 0:
            violations.append(f"overdrawn: {balances}")

    async def processing() -> None:
        for _ in range(next(pauses)):
            check()  # every await inside a transfer is an observation point
            await asyncio.sleep(0)

    async def one(src: int, dst: int, amount: int) -> bool:
        try:
            await accounts[src].transfer(accounts[dst], amount)
        except InsufficientFundsError:
            return False
        finally:
            check()
        return True

    async def main() -> int:
        accounts.extend(Account(b, processing=processing) for b in openings)
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(*t)) for t in plan]
        return sum(t.result() for t in tasks)

    done = asyncio.run(main())
    assert not violations, violations[:3]
    assert sum(a.balance for a in accounts) == total
    assert all(a.balance >= 0 for a in accounts)
    assert 0 <= done <= len(plan)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_deposits_and_opposite_transfers_on_each_loop_in_debug_mode(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")

    async def main() -> tuple[int, int, int]:
        counter = Account(processing=yield_once)
        a, b = Account(500, processing=yield_once), Account(500, processing=yield_once)
        async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
            for _ in range(100):
                tg.create_task(counter.deposit(1))
                tg.create_task(a.transfer(b, 2))
                tg.create_task(b.transfer(a, 1))
        return int(counter.balance), int(a.balance), int(b.balance)

    assert asyncconc.run(main(), loop=loop, debug=True) == (100, 400, 600)
