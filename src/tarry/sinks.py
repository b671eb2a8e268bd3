"""Sinks that do I/O: JSON lines and syslog, behind a bounded buffer.

The event loop thread only appends to a deque (no lock, no syscall); a writer
thread drains it. When the writer cannot keep up (a full disk, a syslog daemon
that stopped reading) the deque fills to its bound and further events are
dropped and counted, never waited for. The count is reported on stderr at once
and then at most every ``REPORT_EVERY`` seconds, and exported as the metric
``tarry_sink_dropped_events_total``.

Producers that can wait (accepts, the workers' supervisor) wait while a sink's
buffer is past a mark, but only for ``STALL_LIMIT`` seconds in a row: then the
sink is *stuck* (said once on stderr, ``tarry_sink_stuck`` is 1), producers go
on, and its overflow is dropped and counted until its writer drains the buffer
again, which is said too.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from .events import ACCEPT, CLOSE, BaseSink, Event, endlessh_line, stamp

REPORT_EVERY = 10.0  # seconds between two drop reports of one sink
STALL_LIMIT = 2.0
"""Seconds a sink's buffer may stay past the mark at which producers wait for it
(``full``) before it is called stuck: producers then stop waiting, and what does
not fit in its buffer is dropped and counted. A healthy writer under a burst
drains below the mark in milliseconds once accepts pause; a reader that stopped
reading never does, and must not stop the tarpit."""


def _stderr(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class ThreadedSink(BaseSink):
    """A bounded buffer in front of a writer thread.

    ``write(batch)`` runs on the writer thread with up to ``batch`` events. The
    writer sleeps while there is nothing to write, wakes at the first event (a
    lingering sink then waits up to ``interval`` for more, or until ``batch``
    are waiting), so no event waits in memory longer than about ``interval``.
    """

    name = "sink"
    buffered = True
    join_timeout = 5.0  # seconds close() waits for the writer
    linger = False  # wait up to ``interval`` after the first event, to write in batches

    def __init__(
        self,
        capacity: int = 10000,
        batch: int = 500,
        interval: float = 0.2,
        report: Callable[[str], None] = _stderr,
    ) -> None:
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.report = report
        self.dropped = 0
        """Events dropped because the buffer was full (read by the metrics)."""
        self.written = 0
        self.failed = 0
        """Events the writer handed to its target without success."""
        self._buf: deque[Event] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._reported = 0
        self._report_at = 0.0
        self.stuck = False
        """Past the mark for ``STALL_LIMIT`` s: producers no longer wait for it."""
        self._over_since = 0.0  # when ``full`` first saw the buffer past the mark
        self._stuck_at = 0.0
        self._stuck_dropped = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"tarry-{self.name}", daemon=True
            )
            self._thread.start()

    # -- loop thread ---------------------------------------------------------------

    def emit(self, event: Event) -> None:
        buf = self._buf
        n = len(buf)
        if n >= self.capacity or self._stop:
            self.dropped += 1
            now = time.monotonic()
            if now >= self._report_at:
                self._report_at = now + REPORT_EVERY
                self.report(
                    f"tarry: {self.name} sink is not keeping up: dropped "
                    f"{self.dropped - self._reported} events (buffer of {self.capacity} full), "
                    f"{self.dropped} in all"
                )
                self._reported = self.dropped
            return
        buf.append(event)
        if n == 0 or n + 1 == self.batch:
            self._wake.set()

    def full(self, most: int = 2048) -> bool:
        """Whether a producer that can wait (an engine's accepts, the workers'
        supervisor) should: the buffer holds ``most`` events or half its
        capacity, so a burst waits where it is instead of growing this
        process's heap. Never for more than ``STALL_LIMIT`` seconds in a row: a
        writer that cannot drain by then is stuck, and a stuck log must not
        stop the tarpit."""
        if len(self._buf) < min(most, self.capacity // 2):
            self._over_since = 0.0
            return False
        if self.stuck:
            return False
        now = time.monotonic()
        if not self._over_since:
            self._over_since = now
        elif now - self._over_since >= STALL_LIMIT:
            self._stuck_at = now
            self._stuck_dropped = self.dropped
            self.stuck = True
            self.report(
                f"tarry: {self.name} sink is stuck (its buffer has not drained for "
                f"{STALL_LIMIT:g} s): nothing waits for it now, and events past its buffer "
                f"of {self.capacity} are dropped and counted"
            )
            return False
        return True

    def close(self) -> None:
        """Flush what is buffered, waiting at most ``join_timeout`` seconds."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.join_timeout)
            if self._thread.is_alive():
                self.report(
                    f"tarry: {self.name} sink did not finish in {self.join_timeout:g} s; "
                    f"{len(self._buf)} events not written"
                )
        else:
            self._drain()
        self.finish()
        if self.dropped > self._reported:
            self.report(f"tarry: {self.name} sink dropped {self.dropped} events in all")

    # -- writer thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._buf and not self._stop:
                # idle: sleep until an event comes, so a quiet tarpit costs no CPU
                self._wake.wait()
                self._wake.clear()
                if self.linger and not self._stop:
                    self._wake.wait(self.interval)  # gather a batch (one transaction)
                    self._wake.clear()
            self._drain()
            if self._stop and not self._buf:
                return

    def _drain(self) -> None:
        buf = self._buf
        while buf:
            batch: list[Event] = []
            while buf and len(batch) < self.batch:
                batch.append(buf.popleft())
            try:
                self.write(batch)
                self.written += len(batch)
            except Exception as exc:  # the writer thread must survive its target
                self.failed += len(batch)
                self._writer_error(exc)
            if self.stuck and len(buf) < self.batch:
                self._recovered()

    def _idle(self, due: float | None) -> None:
        """Sleep until an event comes or ``due`` (monotonic) passes; with
        events, gather a batch for ``interval``, never past ``due`` (a store's
        checkpoint)."""
        left = None if due is None else due - time.monotonic()
        if left is None or left > 0:
            self._wake.wait(left)
            self._wake.clear()
        if self._buf and not self._stop:
            wait = self.interval
            if due is not None:
                wait = min(wait, max(0.0, due - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def _recovered(self) -> None:
        """The writer drained a stuck buffer: its target reads again."""
        self._over_since = 0.0
        self.stuck = False
        self.report(
            f"tarry: {self.name} sink recovered after {time.monotonic() - self._stuck_at:.1f} s "
            f"stuck; {self.dropped - self._stuck_dropped} events were dropped meanwhile"
        )

    def _writer_error(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now >= getattr(self, "_err_at", 0.0):
            self._err_at = now + REPORT_EVERY
            self.report(f"tarry: {self.name} sink: {exc}")

    def write(self, batch: list[Event]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Release the target; runs once, after the writer stopped."""


def event_dict(event: Event) -> dict[str, object]:
    """The JSON shape of an event: flat, stable keys, IPv4 shown as IPv4."""
    d: dict[str, object] = {
        "time": stamp(event.time),
        "ts": round(event.time, 3),
        "event": event.kind,
    }
    if event.kind == ACCEPT or event.kind == CLOSE:
        d.update(
            proto=event.proto,
            listener=event.listener,
            host=event.ip,
            port=event.port,
            fd=event.fd,
        )
        if event.country:
            d["country"] = event.country
    if event.kind == ACCEPT:
        d.update(clients=event.clients, max_clients=event.max_clients)
    elif event.kind == CLOSE:
        d.update(
            duration=round(event.duration, 3),
            sent=event.sent,
            received=event.received,
            reason=event.reason,
            notes=dict(event.notes),
        )
    else:
        d.update(connects=event.connects, duration=round(event.duration, 3), sent=event.sent)
    return d


def json_line(event: Event) -> str:
    return json.dumps(event_dict(event), ensure_ascii=False, separators=(",", ":"))


def _text_line(event: Event) -> str:
    return endlessh_line(event, True)


def _plain_line(event: Event) -> str:
    return endlessh_line(event, False)


FORMATS = {"json": json_line, "endlessh": _text_line, "endlessh-plain": _plain_line}


class LineSink(ThreadedSink):
    """One line per event on a stream or file: JSON (for Vector, Fluent Bit, Loki
    or ELK) or the endlessh line.

    A path is opened in append mode (and reopened when logrotate moved it away);
    a stream (stdout) is written as is, from the writer thread, so a stdout pipe
    nobody reads does not stall the loop either.
    """

    def __init__(self, target: str | TextIO, fmt: str = "json", **kw: object) -> None:
        # small batches: in a flood of accepts the writer drains early, so few events
        # wait in memory (freed later, they would still leave the heap larger)
        kw.setdefault("batch", 64)
        super().__init__(**kw)  # type: ignore[arg-type]
        self.fmt = fmt
        self.name = "file" if isinstance(target, str) else "stdout"
        self.path = target if isinstance(target, str) else ""
        self._stream: TextIO | None = None if isinstance(target, str) else target
        self._ino = 0
        if self.path:
            self._open()  # fail early, with the operator watching

    def _open(self) -> None:
        self._stream = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        self._ino = os.fstat(self._stream.fileno()).st_ino

    def _reopen_if_rotated(self) -> None:
        try:
            moved = os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            moved = True
        if moved:
            if self._stream is not None:
                self._stream.close()
            self._open()

    def write(self, batch: list[Event]) -> None:
        if self.path:
            self._reopen_if_rotated()
        stream = self._stream
        assert stream is not None
        line = FORMATS[self.fmt]
        stream.write("".join(line(e) + "\n" for e in batch))
        stream.flush()

    def finish(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
                if self.path:
                    self._stream.close()
            except (OSError, ValueError):
                pass


FACILITIES = logging.handlers.SysLogHandler.facility_names


def syslog_address(spec: str) -> str | tuple[str, int]:
    """``/dev/log`` style paths stay paths; ``host:port`` (``[v6]:port``) is UDP or TCP."""
    if spec.startswith("/"):
        return spec
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"not a socket path or host:port: {spec!r}")
    return host.strip("[]"), int(port)


IDENT = re.compile(r"[A-Za-z0-9._/-]{1,32}")
"""A syslog tag: RFC 3164 allows 32 alphanumerics; a space or ``[`` would break
the ``ident[pid]:`` that filters anchor on."""


def syslog_ident(value: str) -> str:
    """``value`` if it can be a syslog tag, else ValueError naming the rule."""
    if not IDENT.fullmatch(value):
        raise ValueError(f"syslog ident {value!r}: 1 to 32 of A-Z a-z 0-9 . _ / -")
    return value


class _Handler(logging.handlers.SysLogHandler):
    """SysLogHandler whose sockets time out and whose errors are counted, not printed."""

    timeout = 2.0
    socket: socket.socket | None  # set by SysLogHandler; typeshed leaves it out

    def __init__(self, sink: SyslogSink, **kw: object) -> None:
        self.sink = sink
        super().__init__(**kw)  # type: ignore[arg-type]

    def createSocket(self) -> None:
        super().createSocket()
        if self.socket is not None:
            self.socket.settimeout(self.timeout)

    def emit(self, record: logging.LogRecord) -> None:
        sock = self.socket
        if sock is not None and sock.gettimeout() is None:  # reconnected by the stdlib
            sock.settimeout(self.timeout)
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.sink.failed += 1
        exc = sys.exc_info()[1]
        self.sink._writer_error(exc if exc is not None else OSError("send failed"))


class SyslogSink(ThreadedSink):
    """Events as syslog messages (the endlessh line body, or JSON), via the stdlib handler.

    A syslog socket that stops reading blocks only the writer thread (each send
    times out after a few seconds); the loop keeps buffering within the bound.
    """

    name = "syslog"

    def __init__(
        self,
        address: str = "/dev/log",
        facility: str = "daemon",
        fmt: str = "endlessh",
        tcp: bool = False,
        ident: str = "tarry",
        **kw: object,
    ) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.fmt = fmt
        self.ident = ident
        """The syslog tag: ``endlessh`` for ``tarry ssh``, so that filters anchored
        on ``endlessh[pid]:`` match it as they match endlessh under systemd."""
        self.facility = FACILITIES[facility]
        self.address = syslog_address(address)
        self.tcp = tcp
        self.handler: _Handler | None = None  # made on the writer thread: connecting may block
        self._record = logging.LogRecord("tarry", logging.INFO, "", 0, "", None, None)

    def _handler(self) -> _Handler:
        addr = self.address
        if self.tcp:
            socktype: int | None = socket.SOCK_STREAM
        else:
            socktype = None if isinstance(addr, str) else socket.SOCK_DGRAM
        handler = _Handler(self, address=addr, facility=self.facility, socktype=socktype)
        handler.ident = f"{self.ident}[{os.getpid()}]: "
        if self.tcp:
            handler.append_nul = False
        return handler

    def say(self, text: str) -> None:
        """Send one line that is not an event (``tarry ssh``'s settings lines) now,
        from the calling thread, with the same ident, PID and facility as events."""
        if self.handler is None:
            self.handler = self._handler()
        tcp = self.tcp and not self.handler.unixsocket
        msg = text + "\n" if tcp else text
        self.handler.emit(logging.LogRecord("tarry", logging.INFO, "", 0, msg, None, None))

    def message(self, event: Event) -> str:
        if self.fmt == "json":
            return json_line(event)
        extra = self.fmt != "endlessh-plain"
        return endlessh_line(event, extra).split(" ", 1)[1]  # syslog stamps it itself

    def write(self, batch: list[Event]) -> None:
        if self.handler is None:
            self.handler = self._handler()
        handler = self.handler
        rec = self._record
        tcp = self.tcp and not handler.unixsocket
        for event in batch:
            msg = self.message(event)
            rec.msg = msg + "\n" if tcp else msg  # newline framing on TCP (RFC 6587)
            handler.emit(rec)

    def finish(self) -> None:
        if self.handler is not None:
            try:
                self.handler.close()
            except OSError:
                pass
