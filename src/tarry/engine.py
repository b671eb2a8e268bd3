"""The engine: listeners, accept, one scheduler for every client, the client table.

Why it looks like this: a tarpit waits 99.999% of the time, so memory per held
client is what counts. There is no coroutine, Task, Transport or socket object
per client. A client is a raw non-blocking fd and one row in column arrays
indexed by fd (32 bytes). One private epoll watches every client for
input and hang-ups, and the asyncio loop watches that epoll's single fd. One
timer wheel (buckets of fds keyed by due time) serves every client, and the
asyncio loop holds just one timer for its earliest bucket.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import heapq
import math
import os
import random
import select
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import proxy
from .bait import Bait, Step, TarpitSpec, note_text, shortest
from .events import ACCEPT, CLOSE, TOTALS, Bus, Event
from .heap import MALLOC_TRIM
from .limits import IPCounter, v6_key
from .net import format_address, raise_fd_limit, tune_listener, unmapped
from .table import (
    SWEEP_EVERY,
    ClientTable,
    Interner,
    make_table,
    pack_host,
    table_rows,
    unpack_host,
)
from .wheel import KEY_MASK, NO_TICK, Wheel, quantum_for

READ_CHUNK = 1 << 16  # one read; peer input is discarded after the bait has seen it
READS_PER_EVENT = 4  # bound the work one busy peer can cause per loop turn
TRIM_AFTER_ACCEPTS = 1024  # a burst this big has its freed heap given back ...
TRIM_QUIET = 2.0  # ... once accepts have paused for this long (seconds)
SINK_WAIT = 0.02  # seconds accepts pause while a sink's buffer is half full
ACCEPT_BATCH = 128  # accepts per wake-up, so a flood cannot starve timers
EPOLL_BATCH = 1024
PENDING_MAX = 1 << 16  # unsent bytes kept for a peer that does not read
NOTES_MAX = 16
GROW = 1024  # table rows added at a time
_IN = select.EPOLLIN | select.EPOLLRDHUP
_INOUT = _IN | select.EPOLLOUT
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_GONE = (BrokenPipeError, ConnectionResetError)
PARK_MAX = 128  # per tarpit: connections past the per-IP cap held unread ("backlog")
NOTICE_WINDOW = 10.0  # seconds; repeated notices (refusals, bad PROXY headers) are summed up
NOTICE_BURST = 5  # notices of one kind logged in full per window
# why a connection was closed without being greeted (tarry_refused_connections_total)
REFUSALS = ("per_ip", "proxy")


@dataclass(eq=False)
class Tarpit:
    """One ``[[tarpit]]`` table: a bait, a client cap and its listeners."""

    spec: TarpitSpec
    bait: Bait
    held: int = 0
    listeners: list[Listener] = field(default_factory=list)
    retired: bool = False
    ips: IPCounter | None = None  # clients per address, while max_clients_per_ip is on
    # past the per-IP cap in "backlog" mode: (fd, listener index, ip4, ip6, port, first bytes)
    parked: list[tuple[int, int, int, bytes | None, int, bytes]] = field(default_factory=list)

    def set_spec(self, spec: TarpitSpec) -> None:
        self.spec = spec
        if spec.max_clients_per_ip <= 0:
            self.ips = None
        elif self.ips is None:
            self.ips = IPCounter()  # clients already held are not counted; they only leave


@dataclass(eq=False)
class Listener:
    index: int
    tarpit: Tarpit
    config_address: str
    sock: socket.socket | None
    address: str = ""
    family: int = socket.AF_INET
    reading: bool = False
    held: int = 0

    @property
    def fd(self) -> int:
        return self.sock.fileno() if self.sock else -1


class Engine:
    """Holds clients for every tarpit in one asyncio loop."""

    tarpit_type: type[Tarpit] = Tarpit

    def __init__(
        self,
        bus: Bus,
        *,
        write_timeout: float = 300.0,
        loop: asyncio.AbstractEventLoop | None = None,
        table: dict[str, memoryview] | None = None,
        ip6: dict[int, bytes] | None = None,
        notes: Interner | None = None,
        publish_top: Callable[[int], None] | None = None,
    ) -> None:
        self.bus = bus
        self.write_timeout = write_timeout
        self.loop = loop or asyncio.get_event_loop()
        self.tarpits: list[Tarpit] = []
        self.listeners: list[Listener | None] = [None]  # index 0 means "free row"
        self.ep = select.epoll()
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        # the client table (tarry.table); its columns are bound here too, as
        # the hot paths read them
        rows = self.rows = ClientTable(
            make_table(table_rows(raise_fd_limit())) if table is None else table,
            ip6,
            notes,
            publish_top,
        )
        self.cap = rows.cap
        # the wheel's buckets hold fds: 2 bytes each while every fd fits
        self._fd_type = "H" if self.cap <= 1 << 16 else "i"
        self.lst, self.t0, self.due = rows.lst, rows.t0, rows.due
        self.sent, self.recv, self.state = rows.sent, rows.recv, rows.state
        self.note, self.port, self.ip4, self.ip6 = rows.note, rows.port, rows.ip4, rows.ip6
        self.notes = rows.notes
        # rare, sparse extras
        self.objs: dict[int, Any] = {}
        self.pending: dict[int, tuple[bytes, float]] = {}
        self._sweep_at: asyncio.TimerHandle | None = None
        self._deferred: set[int] = set()  # ticks held back while a write is pending
        self._timer: asyncio.TimerHandle | None = None
        self.wheel = Wheel(self.due, self._fd_type, self._arm)
        # totals, as endlessh keeps them
        self.held = 0
        self.connects = 0
        self.closed_seconds = 0.0
        self.bytes_sent = 0
        self._fd_pause: asyncio.TimerHandle | None = None
        self._fd_backoff = 0.0
        self._burst = 0  # clients accepted since the heap was last given back
        self._trim_at: asyncio.TimerHandle | None = None
        self.running = False
        self.log: Callable[[str], None] = lambda msg: print(f"tarry: {msg}", file=sys.stderr)
        # limits ([limits] max_clients; per-IP caps live on each Tarpit)
        self.max_clients = 0  # across every listener; 0 = only the per-tarpit caps
        self._full = False  # accepts are paused because of max_clients
        self.refused = 0  # connections closed at once for being past a per-IP cap
        self.refusals = dict.fromkeys(REFUSALS, 0)
        """Connections closed without a greeting, by reason (``REFUSALS``)."""
        self._notices: dict[str, list[Any]] = {}  # kind -> [count, summary timer]
        # a listening socket that a reload lets go of (systemd's are handed back)
        self.discard_socket: Callable[[socket.socket], None] = socket.socket.close

    # ---- set-up ---------------------------------------------------------------

    def start(self) -> None:
        self.loop.add_reader(self.ep.fileno(), self._on_epoll)
        self.running = True
        _warm_code(self.ep.fileno())
        self._sweep_at = self.loop.call_later(SWEEP_EVERY, self._sweep)
        for listener in self.listeners:
            if listener is not None and listener.sock is not None:
                self._resume(listener)

    def add_tarpit(
        self, spec: TarpitSpec, bait: Bait, socks: Iterable[tuple[str, socket.socket]]
    ) -> Tarpit:
        tarpit = self.tarpit_type(spec, bait)
        tarpit.set_spec(spec)
        self.tarpits.append(tarpit)
        for config_address, sock in socks:
            self._add_listener(tarpit, config_address, sock)
        self._retune()
        return tarpit

    def _add_listener(self, tarpit: Tarpit, config_address: str, sock: socket.socket) -> Listener:
        tune_listener(sock)
        host, port = sock.getsockname()[:2]
        try:
            index = self.listeners.index(None, 1)
        except ValueError:
            index = len(self.listeners)
            self.listeners.append(None)
        listener = Listener(index, tarpit, config_address, sock)
        listener.family = sock.family
        listener.address = format_address(sock.family, host, port)
        self.listeners[index] = listener
        tarpit.listeners.append(listener)
        if self.running:
            self._resume(listener)
        return listener

    def _retune(self) -> None:
        """Size the wheel's buckets to 1/40 of the shortest wait any bait may ask
        for (at most 250 ms): lines go out at most 2.5% late, and each wake-up
        serves many clients.

        Wake-ups, not lines, are what the kernel charges most for: every batch
        wakes the peers' readers and the scheduler interleaves them with us.
        Measured at 10,000 clients spread over a 10 s delay (bench/run.py
        --spread): 0.84 s CPU per minute with 100 ms buckets, 0.70 s with 250 ms,
        0.58 s with 1 s. 2.5% stays well inside the margin the HTTP bait keeps
        below a client's read timeout (20%)."""
        live = [shortest(t.bait, t.spec.delay) for t in self.tarpits if not t.retired]
        lst = self.lst
        self.wheel.set_quantum(quantum_for(live), lambda fd: bool(lst[fd]))

    # ---- the client table -----------------------------------------------------

    def host(self, fd: int) -> str:
        listener = self.listeners[self.lst[fd]]
        return self.rows.host(fd, listener.family if listener is not None else socket.AF_INET)

    def counters(self, fd: int) -> tuple[int, int]:
        return self.rows.counters(fd)

    # ---- accept ---------------------------------------------------------------

    def _resume(self, listener: Listener) -> None:
        if not listener.reading and listener.sock is not None and self._fd_pause is None:
            self.loop.add_reader(listener.fd, self._on_accept, listener)
            listener.reading = True

    def _pause(self, listener: Listener) -> None:
        if listener.reading:
            self.loop.remove_reader(listener.fd)
            listener.reading = False

    def _on_accept(self, listener: Listener) -> None:
        tarpit = listener.tarpit
        sock = listener.sock
        if sock is None:
            return
        if self.bus.behind():
            # a sink is behind (a flood of events): new clients wait in the
            # kernel backlog rather than have their ACCEPT or CLOSE lines dropped
            self._hold_accepts(SINK_WAIT)
            return
        for _ in range(ACCEPT_BATCH):
            if not self._claim(tarpit):
                # new clients wait in the kernel backlog, as with endlessh
                if self.max_clients and self.held >= self.max_clients:
                    self._full = True
                    for other in self.listeners:
                        if other is not None:
                            self._pause(other)
                for other in tarpit.listeners:
                    self._pause(other)
                return
            try:
                # the raw fd: no socket object to make and detach for each client
                fd, peer = sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                self._after_burst()
                return
            except OSError as exc:
                if exc.errno in _FD_ERRORS:
                    self._out_of_fds(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR):
                    continue
                self.log(f"accept on {listener.address}: {exc.strerror or exc}")
                return
            self._fd_backoff = 0.0
            self._burst += 1
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)  # a new socket has no other flags
                self.ep.register(fd, _IN)
            except OSError as exc:  # out of kernel memory for epoll, or the peer is gone
                self.log(f"could not register a client: {exc.strerror or exc}")
                os.close(fd)
                continue
            self._admit(listener, fd, peer)

    def _after_burst(self) -> None:
        """Once a flood of accepts has been quiet for a while, give the heap it
        grew into back to the system: glibc keeps freed memory in the middle
        of the heap otherwise, and a flood's transient events and buffers would
        stay resident as if every held client cost that much."""
        if self._burst < TRIM_AFTER_ACCEPTS or MALLOC_TRIM is None:
            return
        if self._trim_at is not None:
            self._trim_at.cancel()
        self._trim_at = self.loop.call_later(TRIM_QUIET, self._trim)

    def _trim(self) -> None:
        self._trim_at = None
        self._burst = 0
        if MALLOC_TRIM is not None:
            MALLOC_TRIM(0)

    def _out_of_fds(self, exc: OSError) -> None:
        """Stop accepting for a while rather than spin; held clients are kept."""
        first = self._fd_backoff == 0.0
        self._fd_backoff = min(5.0, max(0.1, self._fd_backoff * 2))
        if first:
            self.log(
                f"accept: {exc.strerror} with {self.held} clients held; "
                "pausing accepts until descriptors free up"
            )
        self._hold_accepts(self._fd_backoff)

    def _hold_accepts(self, seconds: float) -> None:
        for listener in self.listeners:
            if listener is not None:
                self._pause(listener)
        if self._fd_pause is None:
            self._fd_pause = self.loop.call_later(seconds, self._fd_resume)

    def _fd_resume(self) -> None:
        self._fd_pause = None
        self._resume_all()

    def set_max_clients(self, cap: int) -> None:
        """The global cap ([limits] max_clients; 0 = none). Lowering it drops nobody."""
        self.max_clients = cap
        if self.running:
            self._resume_all()

    def _room(self, tarpit: Tarpit) -> bool:
        """Whether ``tarpit`` may take one more client under every cap."""
        return (
            tarpit.held < tarpit.spec.max_clients
            and (not self.max_clients or self.held < self.max_clients)
            and len(tarpit.parked) < PARK_MAX
        )

    # Whether one more client may be accepted now. Workers override it to take
    # a place under the caps they share with other workers; here it is _room.
    _claim = _room

    def _resume_all(self) -> None:
        self._full = False
        for listener in self.listeners:
            if listener is not None and not listener.tarpit.retired and self._room(listener.tarpit):
                self._resume(listener)

    def notice(self, kind: str, message: str) -> None:
        """Log a notice that a peer can cause at will, a few per window, then a sum.

        The sum is said by a timer at the window's end, so it comes even if no
        notice of that kind ever follows."""
        seen = self._notices.get(kind)
        if seen is None:
            timer = self.loop.call_later(NOTICE_WINDOW, self._summarise, kind)
            seen = self._notices[kind] = [0, timer]
        seen[0] += 1
        if seen[0] <= NOTICE_BURST:
            self.log(message)

    def _summarise(self, kind: str) -> None:
        seen = self._notices.pop(kind, None)
        if seen is not None and seen[0] > NOTICE_BURST:
            self.log(f"{seen[0] - NOTICE_BURST} more {kind} notices in {NOTICE_WINDOW:g}s")

    def refuse(self, reason: str) -> None:
        """Count a connection closed without a greeting."""
        self.refusals[reason] += 1

    def refused_by_reason(self) -> dict[str, int]:
        """What ``tarry_refused_connections_total`` exports."""
        return dict(self.refusals)

    def _admit(self, listener: Listener, fd: int, peer: tuple[Any, ...]) -> None:
        if fd >= self.cap:  # only if someone raised the fd limit behind our back
            os.close(fd)
            return
        self.rows.take(fd)
        host, port = peer[0], peer[1]
        ip4, ip6 = pack_host(host)
        tarpit = listener.tarpit
        now = self.loop.time()
        if tarpit.spec.proxy_protocol:
            # hold the connection until its header names the real peer; ACCEPT comes then
            self._fill(listener, fd, ip4, ip6, port, now)
            self.objs[fd] = _ProxyWait()
            self._schedule(fd, now + tarpit.spec.proxy_timeout, tarpit.spec.proxy_timeout)
            return
        if tarpit.ips is not None and not self._per_ip(tarpit, listener, fd, ip4, ip6, port):
            return
        self._fill(listener, fd, ip4, ip6, port, now)
        self._greet(listener, fd, host, port, now)

    def _fill(
        self, listener: Listener, fd: int, ip4: int, ip6: bytes | None, port: int, now: float
    ) -> None:
        self.lst[fd] = listener.index
        self.t0[fd] = int(now * 1000.0) & KEY_MASK
        self.due[fd] = NO_TICK
        self.sent[fd] = 0
        self.recv[fd] = 0
        self.state[fd] = 0
        self.note[fd] = 0
        self.port[fd] = port
        self.ip4[fd] = ip4
        if ip6 is not None:
            self.ip6[fd] = ip6
        self.held += 1
        listener.tarpit.held += 1
        listener.held += 1

    def _greet(self, listener: Listener, fd: int, host: str, port: int, now: float) -> None:
        """ACCEPT, then the bait's first step: the client now counts as held."""
        tarpit = listener.tarpit
        self.connects += 1
        self.bus.emit(
            Event(
                ACCEPT,
                time.time(),
                tarpit.spec.protocol,
                listener.address,
                host,
                port,
                fd,
                clients=tarpit.held,
                max_clients=tarpit.spec.max_clients,
            )
        )
        peer_ip = unmapped(host)
        self._run(fd, tarpit.bait.open, (peer_ip,), now)

    # ---- per-IP caps and the PROXY header ---------------------------------------

    def _per_ip(
        self,
        tarpit: Tarpit,
        listener: Listener,
        fd: int,
        ip4: int,
        ip6: bytes | None,
        port: int,
        first: bytes = b"",
    ) -> bool:
        """Count one more client from this address, or refuse or park it (False).
        ``fd`` is registered with epoll and has no row in the table."""
        ips = tarpit.ips
        assert ips is not None
        key6 = None if ip6 is None else v6_key(ip6)
        if ips.count(ip4, key6) < tarpit.spec.max_clients_per_ip:
            ips.add(ip4, key6)
            return True
        who = unpack_host(ip4, ip6)
        if tarpit.spec.per_ip_action == "backlog":
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
            tarpit.parked.append((fd, listener.index, ip4, ip6, port, first[:256]))
            if len(tarpit.parked) >= PARK_MAX:
                for other in tarpit.listeners:
                    self._pause(other)
            self.notice(
                "per-IP",
                f"{listener.address}: {who} has {tarpit.spec.max_clients_per_ip} clients "
                f"(max_clients_per_ip); a new one waits unread ({len(tarpit.parked)} waiting)",
            )
            return False
        os.close(fd)
        self.refused += 1
        self.refuse("per_ip")
        self.notice(
            "per-IP",
            f"{listener.address}: {who} has {tarpit.spec.max_clients_per_ip} clients "
            "(max_clients_per_ip); closed a new one",
        )
        return False

    def _unpark(self, tarpit: Tarpit, ip4: int, ip6: bytes | None) -> None:
        """An address left: let its longest-waiting parked connection in."""
        parked = tarpit.parked
        for i, entry in enumerate(parked):
            if entry[2] == ip4 and (entry[3] is None) == (ip6 is None):
                if ip6 is not None and v6_key(entry[3]) != v6_key(ip6):  # type: ignore[arg-type]
                    continue
                del parked[i]
                break
        else:
            return
        fd, index, _, _, port, first = entry
        listener = self.listeners[index]
        if (
            listener is None
            or listener.tarpit is not tarpit
            or listener.sock is None
            or tarpit.retired
            or not self._register(fd)
        ):
            os.close(fd)  # its listener is gone: as if the backlog had been closed
            return
        if not tarpit.retired and self._room(tarpit):
            for other in tarpit.listeners:
                self._resume(other)
        if tarpit.ips is not None:
            tarpit.ips.add(ip4, None if ip6 is None else v6_key(ip6))
        now = self.loop.time()
        self._fill(listener, fd, ip4, ip6, port, now)
        self._greet(listener, fd, unpack_host(ip4, ip6, listener.family), port, now)
        if first and self.lst[fd]:
            self.rows.count(self.recv, 1, fd, len(first))
            self._feed(fd, listener, first, now)

    def _register(self, fd: int) -> bool:
        try:
            self.ep.register(fd, _IN)
            return True
        except OSError as exc:
            self.log(f"could not register a client: {exc.strerror or exc}")
            return False

    def _close_parked(self, tarpit: Tarpit, which: Callable[[int], bool] = lambda i: True) -> None:
        keep = []
        for entry in tarpit.parked:
            if which(entry[1]):
                os.close(entry[0])
            else:
                keep.append(entry)
        tarpit.parked[:] = keep

    def _proxy_input(self, fd: int, wait: _ProxyWait, data: bytes, now: float) -> None:
        """Bytes from a client whose PROXY header is not complete yet."""
        listener = self.listeners[self.lst[fd]]
        assert listener is not None
        wait += data
        try:
            header = proxy.parse(wait)
        except proxy.ProxyError as exc:
            self.notice("PROXY", f"{listener.address}: from {self.host(fd)}: {exc}; closed")
            self.refuse("proxy")
            self._close(fd, "proxy")
            return
        if header is None:
            return
        rest = bytes(wait[header.length :])
        del self.objs[fd]
        ip4, ip6, port = self.ip4[fd], self.ip6.get(fd), self.port[fd]
        if header.family is not None:
            ip4, ip6 = pack_host(header.src)
            port = header.src_port
        # leave the row as a plain client would have it, minus the header wait
        self._forget_row(fd, listener)
        tarpit = listener.tarpit
        if tarpit.ips is not None and not self._per_ip(tarpit, listener, fd, ip4, ip6, port, rest):
            self._after_leave(listener)
            return
        self._fill(listener, fd, ip4, ip6, port, now)
        self._greet(listener, fd, unpack_host(ip4, ip6, listener.family), port, now)
        if rest and self.lst[fd]:
            self.rows.count(self.recv, 1, fd, len(rest))
            self._feed(fd, listener, rest, now)

    # ---- input ----------------------------------------------------------------

    def _on_epoll(self) -> None:
        try:
            ready = self.ep.poll(0, EPOLL_BATCH)
        except InterruptedError:
            return
        for fd, mask in ready:
            if fd >= self.cap or not self.lst[fd]:
                continue
            if mask & select.EPOLLOUT and fd in self.pending:
                now = self.loop.time()
                if self._flush(fd, now) and fd in self._deferred:
                    self._deferred.discard(fd)
                    self._schedule(fd, now)  # the tick that waited for room
                if not self.lst[fd]:
                    continue
            if mask & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR):
                self._on_readable(fd)

    def _on_readable(self, fd: int) -> None:
        buf = self._buf
        for _ in range(READS_PER_EVENT):
            try:
                n = os.readv(fd, (buf,))
            except BlockingIOError:
                return
            except ConnectionResetError:
                self._close(fd, "reset")
                return
            except OSError:
                self._close(fd, "error")
                return
            if n == 0:
                self._close(fd, "closed")
                return
            self.rows.count(self.recv, 1, fd, n)
            listener = self.listeners[self.lst[fd]]
            assert listener is not None
            now = self.loop.time()
            obj = self.objs.get(fd)
            if obj is _Closing:
                continue  # its last words are on the way out; input no longer matters
            data = bytes(self._view[:n])
            if type(obj) is _ProxyWait:
                self._proxy_input(fd, obj, data, now)
            else:
                args = (self.state[fd], obj, data, self.age(fd, now))
                self._run(fd, listener.tarpit.bait.feed, args, now)
            if not self.lst[fd]:
                return
            if n < READ_CHUNK:
                return

    def _feed(self, fd: int, listener: Listener, data: bytes, now: float) -> None:
        args = (self.state[fd], self.objs.get(fd), data, self.age(fd, now))
        self._run(fd, listener.tarpit.bait.feed, args, now)

    # ---- the bait's steps -----------------------------------------------------

    def _run(self, fd: int, call: Callable[..., Step], args: tuple[Any, ...], now: float) -> None:
        """Call the bait and carry out its step; a bait bug closes one client, never the engine."""
        try:
            step = call(*args)
            self.state[fd] = step.state
        except Exception as exc:
            self._bait_failed(fd, call, exc)
            return
        self._apply(fd, step, now)

    def _bait_failed(self, fd: int, call: Callable[..., Step], exc: Exception) -> None:
        self.log(f"bait {getattr(call, '__qualname__', call)} failed: {exc!r}")
        self._close(fd, "error")

    def _apply(self, fd: int, step: Step, now: float) -> None:
        state, out, delay, obj = step.state, step.out, step.delay, step.obj
        close, notes = step.close, step.notes
        if obj is None:
            if fd in self.objs:
                del self.objs[fd]
        else:
            self.objs[fd] = obj
        if notes:
            self._merge_notes(fd, notes)
        if out and not self._send(fd, out, now):
            return
        if close:
            if fd in self.pending:
                # let the last words go out, then close at the next tick
                self._schedule(fd, now)
                self.state[fd] = state
                self.objs[fd] = _Closing
            else:
                self._close(fd, "bait")
            return
        if delay is not None:
            self._schedule(fd, now + delay, delay)

    def _merge_notes(self, fd: int, new: tuple[tuple[str, str | bytes], ...]) -> None:
        old_id = self.note[fd]
        old = self.notes.items[old_id] or ()
        merged = dict(old)
        for key, value in new:
            if key in merged or len(merged) < NOTES_MAX:
                merged[str(key)[:32]] = note_text(value)
        notes = tuple(merged.items())
        if notes != old:
            self.note[fd] = self.notes.acquire(notes)
            self.notes.release(old_id)

    def _send(self, fd: int, data: bytes, now: float) -> bool:
        """Write now or keep at most one unit; False when the client is gone."""
        if fd in self.pending:
            pend, since = self.pending[fd]
            if len(pend) + len(data) > PENDING_MAX:
                self._close(fd, "write-timeout")
                return False
            self.pending[fd] = (pend + data, since)
            return True
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._close(fd, "reset" if isinstance(exc, _GONE) else "error")
            return False
        if n:
            self.rows.count(self.sent, 0, fd, n)
            self.bytes_sent += n
        if n < len(data):
            self.pending[fd] = (data[n:], now)
            self.ep.modify(fd, _INOUT)
        return True

    def _flush(self, fd: int, now: float) -> bool:
        """Retry a pending write; True when nothing is left pending."""
        data, since = self.pending.pop(fd)
        if not self._send(fd, data, since):
            return False
        if fd in self.pending:
            if now - since >= self.write_timeout:
                self._close(fd, "write-timeout")
            return False
        self.ep.modify(fd, _IN)
        return True

    # ---- the timer wheel ------------------------------------------------------

    def _schedule(self, fd: int, due: float, wait: float = 0.0) -> None:
        self.wheel.schedule(fd, due, wait)

    def _arm(self, when: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None if when is None else self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        """Tick every client that is due. This is the hot path: the common step
        (send a unit, come back later) is carried out inline, with locals."""
        self._timer = None
        wheel = self.wheel
        wheel.fired()
        now = self.loop.time()
        q, per_part = wheel.quantum, wheel.per_part
        limit = wheel.limit(now)
        now_ms = int(now * 1000.0)
        keys, buckets, heappop, ceil = wheel.keys, wheel.buckets, heapq.heappop, math.ceil
        lst, due, t0, state, sent = self.lst, self.due, self.t0, self.state, self.sent
        NO = NO_TICK
        listeners, pending, objs, write = self.listeners, self.pending, self.objs, os.write
        sent_now = 0
        while keys and keys[0] <= limit:
            key = heappop(keys)
            low = key & KEY_MASK
            for fd in buckets.pop(key):
                # skip stale rows: the client left, or was rescheduled
                if not lst[fd] or due[fd] != low:
                    continue
                due[fd] = NO
                if fd in pending or fd in objs:
                    self._tick(fd, now)
                    continue
                bait = listeners[lst[fd]].tarpit.bait  # type: ignore[union-attr,unused-ignore]
                try:
                    step = bait.tick(state[fd], None, ((now_ms - t0[fd]) & 0xFFFFFFFF) * 0.001)
                    state[fd] = step.state
                except Exception as exc:
                    self._bait_failed(fd, bait.tick, exc)
                    continue
                out, delay = step.out, step.delay
                if step.obj is not None or step.close or step.notes or not out:
                    self._apply(fd, step, now)
                    continue
                try:
                    n = write(fd, out)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    self._close(fd, "reset" if isinstance(exc, _GONE) else "error")
                    continue
                v = sent[fd] + n
                if v > 0xFFFFFFFF:
                    self.rows.count(sent, 0, fd, n)
                else:
                    sent[fd] = v
                sent_now += n
                if n < len(out):
                    pending[fd] = (out[n:], now)
                    self.ep.modify(fd, _INOUT)
                if delay is not None:
                    r = int(delay * per_part)  # the grid for this wait: see Wheel.key
                    if r > 1:
                        m = 1 << (r.bit_length() - 1)
                        k = ceil((now + delay) / (q * m)) * m
                    else:
                        k = ceil((now + delay) / q)
                    bucket = buckets.get(k)
                    if bucket is None:
                        wheel.schedule(fd, now + delay, delay)
                    else:
                        due[fd] = k & KEY_MASK
                        bucket.append(fd)
        self.bytes_sent += sent_now
        wheel.rearm()

    def _tick(self, fd: int, now: float) -> None:
        if fd in self.pending and not self._flush(fd, now):
            if self.lst[fd]:
                _, since = self.pending[fd]
                self._deferred.add(fd)
                self._schedule(fd, since + self.write_timeout)
            return
        self._deferred.discard(fd)
        obj = self.objs.get(fd)
        if obj is _Closing:
            self._close(fd, "bait")
            return
        listener = self.listeners[self.lst[fd]]
        assert listener is not None
        if type(obj) is _ProxyWait:
            self.notice(
                "PROXY",
                f"{listener.address}: from {self.host(fd)}: no complete PROXY header within "
                f"{listener.tarpit.spec.proxy_timeout:g}s; closed",
            )
            self.refuse("proxy")
            self._close(fd, "proxy")
            return
        self._run(fd, listener.tarpit.bait.tick, (self.state[fd], obj, self.age(fd, now)), now)

    # ---- close ----------------------------------------------------------------

    def _close(self, fd: int, reason: str) -> None:
        listener = self.listeners[self.lst[fd]]
        assert listener is not None
        if type(self.objs.get(fd)) is _ProxyWait:
            # never greeted (no ACCEPT), so no CLOSE either
            self._forget_row(fd, listener)
            try:
                os.close(fd)
            except OSError:
                pass
            self._after_leave(listener)
            return
        now = self.loop.time()
        duration = self.age(fd, now)
        sent, received = self.counters(fd)
        event = Event(
            CLOSE,
            time.time(),
            listener.tarpit.spec.protocol,
            listener.address,
            self.host(fd),
            self.port[fd],
            fd,
            duration=duration,
            sent=sent,
            received=received,
            reason=reason,
            notes=self.rows.notes_of(fd),
        )
        ip4, ip6 = self.ip4[fd], self.ip6.get(fd)
        self._forget_row(fd, listener)
        try:
            os.close(fd)  # also leaves the epoll set
        except OSError:
            pass
        self.closed_seconds += duration
        tarpit = listener.tarpit
        if tarpit.ips is not None:
            tarpit.ips.remove(ip4, None if ip6 is None else v6_key(ip6))
        self.bus.emit(event)
        if tarpit.parked:
            self._unpark(tarpit, ip4, ip6)
        self._after_leave(listener)

    def _forget_row(self, fd: int, listener: Listener) -> None:
        """Clear a client's row and counts; the fd itself stays open."""
        self.rows.forget(fd)
        self.due[fd] = NO_TICK
        self.objs.pop(fd, None)
        self.pending.pop(fd, None)
        self._deferred.discard(fd)
        self.held -= 1
        listener.tarpit.held -= 1
        listener.held -= 1

    def _after_leave(self, listener: Listener) -> None:
        """A client (or a header wait) is gone: let the next one in, or tidy up."""
        tarpit = listener.tarpit
        if listener.sock is None and listener.held == 0:
            self._drop_listener(listener)
        if tarpit.retired:
            if tarpit.held == 0 and not tarpit.parked:
                self._forget(tarpit)
        elif self._full:
            if self.held < self.max_clients or not self.max_clients:
                self._resume_all()
        elif tarpit.held < tarpit.spec.max_clients and len(tarpit.parked) < PARK_MAX:
            for other in tarpit.listeners:
                self._resume(other)

    def clients(self) -> list[int]:
        return self.rows.clients()

    def close_all(self, reason: str = "shutdown") -> None:
        for fd in self.clients():
            self._close(fd, reason)

    # ---- accept times -----------------------------------------------------------

    def age(self, fd: int, now: float) -> float:
        return self.rows.age(fd, now)

    def _sweep(self, now: float | None = None) -> None:
        self.rows.sweep(self.loop.time() if now is None else now)
        self._sweep_at = self.loop.call_later(SWEEP_EVERY, self._sweep)

    # ---- totals, reload, shutdown ---------------------------------------------

    def totals(self) -> Event:
        now = self.loop.time()
        held_seconds = sum(self.age(fd, now) for fd in self.clients())
        return Event(
            TOTALS,
            time.time(),
            connects=self.connects,
            duration=self.closed_seconds + held_seconds,
            sent=self.bytes_sent,
        )

    def emit_totals(self) -> None:
        self.bus.emit(self.totals())

    def apply(
        self,
        pairs: list[tuple[TarpitSpec, Bait]],
        bind: Callable[[str], socket.socket],
        release_removed: bool = True,
    ) -> None:
        """Move to a new set of tarpits without dropping anyone who stays.

        A tarpit that keeps its name (or, unnamed, its protocol and addresses)
        is updated in place: its held clients go on with the new bait, so a new
        delay applies from each client's next tick. Listening sockets whose
        address stays are handed over, never re-bound. Clients of removed
        listeners are released with a CLOSE unless ``release_removed`` is off
        (endlessh keeps them when its port changes). New addresses are bound
        before anything changes, so a failed bind leaves the old set running.
        """
        # which running tarpit each new table continues (nothing changes yet)
        unmatched = [t for t in self.tarpits if not t.retired]
        plan: list[tuple[Tarpit | None, TarpitSpec, Bait]] = []
        for spec, bait in pairs:
            old = next((t for t in unmatched if _same_tarpit(t.spec, spec)), None)
            if old is not None:
                unmatched.remove(old)
            plan.append((old, spec, bait))
        # the listeners that go, and the addresses each table lacks
        going = [lst for t in unmatched for lst in t.listeners if lst.sock is not None]
        missing: list[tuple[int, str]] = []
        for i, (old, spec, _) in enumerate(plan):
            have = set()
            for lst in old.listeners if old is not None else []:
                if lst.sock is not None:
                    if lst.config_address in spec.listen:
                        have.add(lst.config_address)
                    else:
                        going.append(lst)
            missing += [(i, addr) for addr in spec.listen if addr not in have]
        # a going listener's socket serves its address again; the rest are bound
        # now, before anything changes, so a failed bind leaves the old set running
        spare: dict[str, list[Listener]] = {}
        for lst in going:
            spare.setdefault(lst.config_address, []).append(lst)
        handed: dict[int, Listener] = {}
        fresh: dict[int, socket.socket] = {}
        try:
            for j, (_, addr) in enumerate(missing):
                if spare.get(addr):
                    handed[j] = spare[addr].pop()
                else:
                    fresh[j] = bind(addr)
        except BaseException:
            for sock in fresh.values():
                self.discard_socket(sock)
            raise
        for tarpit in unmatched:
            tarpit.retired = True
        kept = {id(lst) for lst in handed.values()}
        detached: dict[int, socket.socket] = {}
        for lst in going:
            sock = self._unlisten(lst)
            if id(lst) in kept:
                detached[id(lst)] = sock
            else:
                self.discard_socket(sock)
            if release_removed:
                self._release_listener(lst)
        for tarpit in unmatched:
            if tarpit.held == 0 and not tarpit.parked:
                self._forget(tarpit)
        socks: dict[int, list[tuple[str, socket.socket]]] = {}
        for j, (i, addr) in enumerate(missing):
            sock = fresh[j] if j in fresh else detached[id(handed[j])]
            socks.setdefault(i, []).append((addr, sock))
        for i, (old, spec, bait) in enumerate(plan):
            if old is None:
                self.add_tarpit(spec, bait, socks.get(i, []))
                continue
            old.set_spec(spec)
            old.bait = bait
            for addr, sock in socks.get(i, []):
                self._add_listener(old, addr, sock)
        self._retune()
        self._resume_all()

    def _release_listener(self, lst: Listener) -> None:
        """Release the clients of a listener that is going away, parked ones too."""
        index = lst.index
        self._release(lambda fd: self.lst[fd] == index)
        self._close_parked(lst.tarpit, lambda i: i == index)

    def _release(self, which: Callable[[int], bool]) -> None:
        for fd in self.clients():
            if which(fd):
                self._close(fd, "reload")

    def _unlisten(self, listener: Listener) -> socket.socket:
        """Detach a listener's socket; the listener stays while it has clients."""
        self._pause(listener)
        sock = listener.sock
        assert sock is not None
        listener.sock = None
        if listener.held == 0:
            self._drop_listener(listener)
        return sock

    def _drop_listener(self, listener: Listener) -> None:
        if listener in listener.tarpit.listeners:
            listener.tarpit.listeners.remove(listener)
        if self.listeners[listener.index] is listener:
            self.listeners[listener.index] = None

    def _forget(self, tarpit: Tarpit) -> None:
        if tarpit in self.tarpits:
            self.tarpits.remove(tarpit)

    def stop(self) -> None:
        """Close every client (a CLOSE each), then log TOTALS."""
        for listener in list(self.listeners):
            if listener is not None and listener.sock is not None:
                self._unlisten(listener).close()
        for tarpit in self.tarpits:
            self._close_parked(tarpit)
        self.close_all("shutdown")
        self.emit_totals()
        self.wheel.clear()
        for handle in (self._fd_pause, self._trim_at, self._sweep_at):
            if handle is not None:
                handle.cancel()
        self._fd_pause = self._trim_at = None
        for kind, (_, timer) in list(self._notices.items()):  # the sums not said yet
            timer.cancel()
            self._summarise(kind)
        if self.running:
            self.loop.remove_reader(self.ep.fileno())
            self.running = False
        self.ep.close()

    def snapshot(self, limit: int = 20) -> list[dict[str, Any]]:
        """The longest-held current clients, as plain data (for the dashboard)."""
        now = self.loop.time()
        out = []
        for fd in self.rows.longest_held(now, limit):
            listener = self.listeners[self.lst[fd]]
            assert listener is not None
            sent, received = self.counters(fd)
            out.append(
                {
                    "proto": listener.tarpit.spec.protocol,
                    "listener": listener.address,
                    "host": self.host(fd),
                    "port": self.port[fd],
                    "age": self.age(fd, now),
                    "sent": sent,
                    "received": received,
                    "notes": dict(self.rows.notes_of(fd)),
                }
            )
        return out

    def live_totals(self) -> dict[tuple[str, str], tuple[int, float, int]]:
        """Clients held now per (proto, listener), with their seconds and bytes sent
        so far: lets /metrics' time and byte counters move while clients are held."""
        now = self.loop.time()
        out: dict[tuple[str, str], list[float]] = {}
        for fd in self.clients():
            listener = self.listeners[self.lst[fd]]
            if listener is None:
                continue
            acc = out.setdefault((listener.tarpit.spec.protocol, listener.address), [0, 0.0, 0])
            acc[0] += 1
            acc[1] += self.age(fd, now)
            acc[2] += self.counters(fd)[0]
        return {k: (int(v[0]), v[1], int(v[2])) for k, v in out.items()}

    def held_by_protocol(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for tarpit in self.tarpits:
            out[tarpit.spec.protocol] = out.get(tarpit.spec.protocol, 0) + tarpit.held
        return out


def _same_tarpit(old: TarpitSpec, new: TarpitSpec) -> bool:
    """Whether held clients of ``old`` can go on under ``new``: same protocol and
    identity, and no change to an option that gives the state word its meaning."""
    if old.protocol != new.protocol:
        return False
    same = old.name == new.name if old.name or new.name else old.listen == new.listen
    from .baits import registry

    module = registry().get(new.protocol)
    stateful = module.stateful_options if module is not None else ()
    return same and all(old.options.get(k) == new.options.get(k) for k in stateful)


class _ClosingMarker:
    """Marks a client whose bait asked to close while its last bytes were pending."""


_Closing = _ClosingMarker()


class _ProxyWait(bytearray):
    """The obj of a client whose PROXY header is still coming: the bytes so far."""


def _warm_code(fd: int) -> None:
    """Run once the library code every client needs (address parsing and its
    locale tables, math, fcntl, heapq, random). A forked worker maps a shared
    library's pages only when it first runs them, 60 to 120 kB in all: its
    first client should not look as if it cost that much."""
    pack_host("192.0.2.1")
    pack_host("2001:db8::1")
    pack_host("::ffff:192.0.2.1")
    keys = [math.ceil(0.5), math.floor(0.5)]
    heapq.heappush(keys, 0)
    heapq.heappop(keys)
    fcntl.fcntl(fd, fcntl.F_GETFL)
    random.random()
