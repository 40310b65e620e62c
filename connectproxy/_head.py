# -*- test-case-name: tests.test_front -*-
"""
What a client sends before its request is handed over, as the front of its
connection reads it: request heads (L{HeadReader}), one at a time, each
under the request deadline, and the early data after a head
(L{EarlyData}).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ._errors import BadRequest
from ._parser import RequestHead, RequestHeadParser
from ._settings import ProxySettings
from ._tunnel import TunnelTransport

__all__ = ["EarlyData", "HeadReader"]


class HeadReader:
    """
    Reads request heads off a client connection: each through a fresh
    L{RequestHeadParser} with the settings' limits, under the request
    deadline (C{--request-timeout}), counted from the connection or from
    the 407 after which the next head is read.

    Bytes a client pipelined after a head are handed back by the owner to
    be read as the next head (after a 407); they are parsed in a loop, not
    recursively, so that a client that pipelines many heads cannot exhaust
    the stack.
    """

    __slots__ = (
        "_clock",
        "_next",
        "_onBadHead",
        "_onHead",
        "_onTimeout",
        "_parser",
        "_parsing",
        "_settings",
        "_timer",
    )

    def __init__(
        self,
        clock: IReactorTime,
        settings: ProxySettings,
        onHead: Callable[[RequestHead, bytes], object],
        onBadHead: Callable[[BadRequest], object],
        onTimeout: Callable[[], object],
    ) -> None:
        """
        @param clock: Where the request deadline's timer comes from.
        @param settings: The head size limits and the request timeout.
        @param onHead: Called with each complete head and the bytes that
            followed it, the deadline stopped.
        @param onBadHead: Called with the L{BadRequest} when a head is
            malformed or too large, the deadline stopped.
        @param onTimeout: Called when the deadline passes.
        """
        self._clock = clock
        self._settings = settings
        self._onHead = onHead
        self._onBadHead = onBadHead
        self._onTimeout = onTimeout
        self._parser = self._newParser()
        self._timer: IDelayedCall | None = None
        self._parsing = False
        self._next: bytes | None = None

    def _newParser(self) -> RequestHeadParser:
        settings = self._settings
        return RequestHeadParser(
            settings.maxRequestLine, settings.maxHeadSize, settings.maxHeaderFields
        )

    def start(self) -> None:
        """
        Start the deadline of the first head.
        """
        self._timer = self._clock.callLater(
            self._settings.requestTimeout, self._timedOut
        )

    def next(self) -> None:
        """
        Read another head, with a fresh parser and a fresh deadline.
        """
        self.stop()
        self._parser = self._newParser()
        self.start()

    def stop(self) -> None:
        """
        Stop the deadline (a head is complete, or the connection is refused
        or gone).
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def feed(self, data: bytes) -> bool:
        """
        Parse bytes of a head.

        @return: Whether they were parsed now; C{False} when called from
            within L{onHead <__init__>} (a 407 handing back the bytes after
            its head): they are parsed once that returns.
        """
        self._next = data
        if self._parsing:
            return False
        self._parsing = True
        try:
            while self._next is not None:
                data, self._next = self._next, None
                self._parse(data)
        finally:
            self._parsing = False
        return True

    def _parse(self, data: bytes) -> None:
        try:
            result = self._parser.feed(data)
        except BadRequest as e:
            self.stop()
            self._onBadHead(e)
            return
        if result is not None:
            self.stop()
            self._onHead(*result)

    @property
    def started(self) -> bool:
        """
        Whether any byte of the head being read has arrived.
        """
        return self._parser.started

    def requestLine(self) -> tuple[str, str] | None:
        """
        The method and target of the request line of the head being read,
        when that line is complete (see L{RequestHeadParser.requestLine}).
        """
        return self._parser.requestLine()

    def _timedOut(self) -> None:
        self._timer = None
        self._onTimeout()


class EarlyData:
    """
    What a client sends after its request head, until the request is
    handed over: written upstream first then, or read as the next head
    after a 407.

    The client is still read from meanwhile, so that a client that leaves
    is noticed (and its checks or connect cancelled); once it has sent more
    than the limit, reading it is paused.

    @ivar paused: Whether reading the client is paused.
    """

    __slots__ = ("_data", "_limit", "_transport", "paused")

    def __init__(self, transport: TunnelTransport, limit: int) -> None:
        """
        @param transport: The client's transport.
        @param limit: How many bytes to keep before pausing the client.
        """
        self._transport = transport
        self._limit = limit
        self._data = bytearray()
        self.paused = False

    def __len__(self) -> int:
        return len(self._data)

    def keep(self, data: bytes) -> None:
        """
        Keep the bytes that came with the head, without pausing the client
        (which may yet be refused, and then should be read to the end of a
        linger).
        """
        self._data += data

    def receive(self, data: bytes) -> None:
        """
        Keep bytes from the client; pause it once they are over the limit.
        """
        self._data += data
        if len(self._data) > self._limit and not self.paused:
            self.paused = True
            self._transport.pauseProducing()

    def take(self) -> bytes:
        """
        @return: The bytes kept, which are kept no more.
        """
        data = bytes(self._data)
        del self._data[:]
        return data

    def resume(self) -> None:
        """
        Read the client again, if it was paused.
        """
        if self.paused:
            self.paused = False
            self._transport.resumeProducing()
