"""uvicorn's h11 protocol with a deadline for each request's line and headers.

uvicorn closes a connection that idles after a response (`timeout_keep_alive`) but waits forever
for the first bytes of a connection and for headers that trickle in under the size bound: a few
hundred such sockets would hold the server. This subclass closes them; the body has its own
deadline in the app (`_read_limited`), where a 408 can still be sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class DeadlineH11Protocol(H11Protocol):
    header_timeout: float = 10.0  # seconds from connection (or the last response) to a complete request head

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        # IDLE: no complete request head yet. A request being read or answered is the app's to bound.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[DeadlineH11Protocol]:
    """The protocol class uvicorn instantiates itself, so the timeout travels as a class attribute."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"header_timeout": seconds})
