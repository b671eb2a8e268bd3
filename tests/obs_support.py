"""Helpers for the observability tests: an admin app on a loop in a thread, events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from tarry.events import ACCEPT, CLOSE, Event


def event(kind: str, i: int, proto: str = "ssh", **kw: Any) -> Event:
    fields: dict[str, Any] = dict(
        kind=kind,
        time=time.time(),
        proto=proto,
        listener="127.0.0.1:2222" if proto == "ssh" else "127.0.0.1:8080",
        host=f"::ffff:203.0.113.{i % 250 + 1}",
        port=40000 + i,
        fd=10 + i,
    )
    fields.update(kw)
    return Event(**fields)


def session(i: int, proto: str, duration: float, sent: int, **kw: Any) -> tuple[Event, Event]:
    return (
        event(ACCEPT, i, proto, country=kw.get("country", "")),
        event(CLOSE, i, proto, duration=duration, sent=sent, reason="closed", **kw),
    )


class LoopThread:
    """An asyncio loop in a thread, standing in for the engine's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def wrap() -> Any:
            return fn()

        return self.run(wrap(), timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
