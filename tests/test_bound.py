"""``Bound``: the time limit on the request path's Redis calls, on asyncio's loop and uvloop's.

It must behave as ``asyncio.timeout`` does (cancel the block at its deadline, and only
then report a timeout) with one timer for many blocks, so these tests mix deadlines and
check the ones that must not fire, too.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from redis_cache_middleware._timeouts import Bound

LOOPS: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop

    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:  # pragma: no cover - uvloop is a dev dependency off Windows
    pass


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    def runner(main: Coroutine[Any, Any, Any]) -> Any:
        loop = request.param()
        try:
            return loop.run_until_complete(main)
        finally:
            loop.close()

    return runner


async def bounded(seconds: float, wait: float) -> str:
    """Sleep ``wait`` under a bound of ``seconds``, as ``guarded`` uses it."""
    bound = Bound(seconds)
    try:
        await asyncio.sleep(wait)
    except BaseException as exc:
        if bound.close(exc):
            return "timeout"
        raise
    bound.close(None)
    return "done"


def test_a_block_past_its_deadline_is_cancelled_and_told_so(run: Any) -> None:
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        outcome = await bounded(0.05, 5)
        return outcome, loop.time() - began

    outcome, took = run(main())
    assert outcome == "timeout"
    assert 0.04 <= took < 1.0


def test_a_block_done_in_time_is_never_cancelled_later(run: Any) -> None:
    async def main() -> tuple[str, bool]:
        outcome = await bounded(0.05, 0)
        # Past the deadline, the task that ran the block must not be cancelled.
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            return outcome, True
        return outcome, False

    assert run(main()) == ("done", False)


def test_a_cancellation_from_elsewhere_is_not_a_timeout(run: Any) -> None:
    async def main() -> bool:
        task = asyncio.ensure_future(bounded(5, 5))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert run(main()) is True


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.uncancel is 3.11+")
def test_a_cancellation_from_elsewhere_at_the_deadline_still_cancels(run: Any) -> None:
    async def main() -> str:
        async def block() -> str:
            bound = Bound(0.02)
            try:
                await asyncio.sleep(0.05)  # the deadline passes while it sleeps
            except BaseException as exc:
                # Cancelled from elsewhere as well: that cancellation wins.
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                if bound.close(exc):
                    return "timeout"
                raise
            return "done"

        try:
            return await asyncio.ensure_future(block())
        except asyncio.CancelledError:
            return "cancelled"

    assert run(main()) == "cancelled"


def test_a_short_deadline_after_a_long_one_fires_on_time(run: Any) -> None:
    async def main() -> tuple[list[str], float]:
        # One timer serves them all: a later, shorter deadline must re-arm it.
        loop = asyncio.get_running_loop()
        long = asyncio.ensure_future(bounded(5, 0.3))
        await asyncio.sleep(0)
        began = loop.time()
        short = asyncio.ensure_future(bounded(0.03, 5))
        done = asyncio.ensure_future(bounded(0.03, 0))
        first = await short
        took = loop.time() - began
        return [first, await done, await long], took

    outcomes, took = run(main())
    assert outcomes == ["timeout", "done", "done"]
    assert took < 0.25  # at its own deadline, not the long one's (nor when the long one ends)


def test_many_blocks_each_get_their_own_outcome(run: Any) -> None:
    async def main() -> list[str]:
        waits = [0.0, 0.2, 0.01, 0.2, 0.0, 0.2] * 20
        return list(await asyncio.gather(*(bounded(0.08, w) for w in waits)))

    expected = ["timeout" if w == 0.2 else "done" for w in [0.0, 0.2, 0.01, 0.2, 0.0, 0.2] * 20]
    assert run(main()) == expected


def test_each_loop_keeps_its_own_deadlines(run: Any) -> None:
    # A second loop, after the first has closed, must get a working bound of its own.
    assert run(bounded(0.02, 5)) == "timeout"
    second = asyncio.new_event_loop()
    try:
        assert second.run_until_complete(bounded(0.02, 5)) == "timeout"
        assert second.run_until_complete(bounded(0.5, 0)) == "done"
    finally:
        second.close()


def test_a_bound_outside_a_task_is_refused() -> None:
    errors: list[BaseException] = []

    def outside() -> None:
        try:
            Bound(1)
        except RuntimeError as exc:
            errors.append(exc)

    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(outside)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    assert len(errors) == 1 and "inside a task" in str(errors[0])


def test_a_loop_closed_with_a_deadline_pending_is_freed(run: Any) -> None:
    # The watch's timer is still armed when the loop closes (the bound ended long before its
    # deadline): nothing of ours may keep the loop alive.
    made: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> str:
        made.append(weakref.ref(asyncio.get_running_loop()))
        return await bounded(60, 0)

    assert run(main()) == "done"
    gc.collect()
    assert made[0]() is None
