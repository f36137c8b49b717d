"""The byte budget: bounded in total and per peer; a full peer waits on its own share only."""

from __future__ import annotations

import asyncio

import pytest

from flopwatch.collector.ingest.budget import ByteBudget


def run(coro):
    return asyncio.run(coro)


async def pending(task: asyncio.Task[None]) -> bool:
    """Whether `task` is still waiting once every ready callback ran."""
    for _ in range(5):
        await asyncio.sleep(0)
    return not task.done()


def test_a_peer_over_its_share_waits_and_others_do_not() -> None:
    async def main():
        budget = ByteBudget(total=1000, per_peer=100)
        await budget.take("flood", 60)
        blocked = asyncio.create_task(budget.take("flood", 60))  # 120 > 100: waits
        assert await pending(blocked)
        await budget.take("node", 60)  # another peer is served at once
        assert budget.held_by("node") == 60 and budget.used == 120
        budget.give("flood", 60)
        await blocked
        assert budget.held_by("flood") == 60 and budget.peak == 120
        assert budget.waits == 1

    run(main())


def test_the_total_bounds_all_peers_together() -> None:
    async def main():
        budget = ByteBudget(total=100, per_peer=100)
        for peer in ("a", "b"):
            await budget.take(peer, 50)
        third = asyncio.create_task(budget.take("c", 10))
        assert await pending(third)
        budget.give("a", 50)
        await third
        assert budget.used == 60 and budget.peak == 100

    run(main())


def test_one_peer_is_served_in_order() -> None:
    async def main():
        budget = ByteBudget(total=1000, per_peer=100)
        await budget.take("a", 100)
        first = asyncio.create_task(budget.take("a", 80))
        assert await pending(first)
        second = asyncio.create_task(budget.take("a", 10))  # fits, but waits behind the first
        assert await pending(second)
        budget.give("a", 100)
        await asyncio.gather(first, second)
        assert budget.held_by("a") == 90

    run(main())


def test_an_envelope_larger_than_the_share_passes_alone() -> None:
    async def main():
        budget = ByteBudget(total=100, per_peer=10)
        await budget.take("a", 500)  # nothing held: let through, or it could never pass
        later = asyncio.create_task(budget.take("a", 1))
        assert await pending(later)
        budget.give("a", 500)
        await later
        assert budget.used == 1

    run(main())


def test_a_cancelled_wait_takes_nothing() -> None:
    async def main():
        budget = ByteBudget(total=100, per_peer=100)
        await budget.take("a", 100)
        waiting = asyncio.create_task(budget.take("b", 50))
        assert await pending(waiting)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        budget.give("a", 100)
        assert budget.used == 0 and budget.held_by("b") == 0
        await budget.take("b", 100)  # nothing left waiting in the way

    run(main())
