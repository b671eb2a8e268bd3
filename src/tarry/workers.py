"""Worker processes: ``[engine] workers = N`` runs N engines under one supervisor.

Why: one process is bound by one core and by its descriptor limit (every held
client is an fd). The supervisor is the only process that binds, drops
privileges, reads the config and owns the sinks (log, history, metrics,
dashboard); workers only hold clients. docs/workers.md has the figures.

- Listening: for every listen address the supervisor binds N ``SO_REUSEPORT``
  sockets, in order, and gives the group a classic BPF program that picks the
  socket from a hash of the peer's source address (IPv4, or the /64 of IPv6).
  Worker i takes socket i, so every connection from one address lands on the
  same worker: a worker's own per-address count is the whole count, and
  ``max_clients_per_ip`` is exact with nothing shared. A dead worker's socket
  stays open in the supervisor; its connections wait in the backlog for the
  worker that replaces it.
- ``max_clients`` (each tarpit's and ``[limits]``) are counted in shared memory,
  one row per worker that only that worker writes. A worker takes a place under
  a lock before ``accept()`` (``flock`` on its own open file description of one
  memfd, which the kernel lets go of if the worker dies), so the sum never
  passes a cap. A worker kept out by other workers' clients looks again every
  ``POLL`` seconds.
- Events: a worker pickles its events in batches, one frame per loop turn, to a
  ``SOCK_SEQPACKET`` socket pair. It never blocks on it: frames the supervisor has
  not read yet wait in a bounded buffer, past which events are dropped, counted
  and reported. Nothing is sent while a client is only held.
- The client table's columns are ``MAP_SHARED`` memory the supervisor made before
  the fork. When a worker dies, the supervisor reads its table and logs a CLOSE
  (reason ``worker-died``) for each client it held, without keeping any state of
  its own per client: listener names and interned notes reach it as messages,
  in order with the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import heapq
import os
import pickle
import signal
import socket
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .bait import Bait, TarpitSpec
from .cbpf import (
    JA,
    JEQ_K,
    LD_B_ABS,
    LD_W_ABS,
    MOD_K,
    MUL_K,
    RET_A,
    RSH_K,
    SO_ATTACH_REUSEPORT_CBPF,
    TAX,
    XOR_X,
    Asm,
    attach,
)
from .engine import PARK_MAX, REFUSALS, Engine, Listener, Tarpit, _ProxyWait
from .events import CLOSE, TOTALS, BaseSink, Bus, Event, Notes, Sink, listen_line
from .heap import MALLOC_TRIM
from .metrics import Metrics
from .net import (
    BindError,
    bind_listener,
    format_address,
    parse_address,
    raise_fd_limit,
    unmapped,
)
from .runtime import config_line, fail, make_baits, observability, run, said_changes, where_in
from .table import Interner, column, make_table, ms_age, table_rows, unpack_host

STRIDE = 256  # shared counts per worker: clients held in all, then one per [[tarpit]]
MAX_TARPITS = STRIDE - 1
STATS = 4 + len(REFUSALS)  # shared figures per worker: connects, seconds closed, bytes
REFUSED_AT = 4  # sent, table top, then connections refused by reason (engine.REFUSALS)
BATCH_MAX = 64  # items per frame, at most: a burst's events leave in small frames,
# so few of them are alive at once (their memory stays resident after the burst)
FRAME_MAX = 1 << 16  # bytes of pickled items per frame, as a rule
MESSAGE_MAX = 1 << 18  # no frame is longer (a longer item is dropped)
BUFFER_MAX = 16 << 20  # bytes of frames a worker keeps while the supervisor does not read
POLL = 0.1  # seconds between looks while other workers' clients fill a cap
STOP_TIMEOUT = 90.0  # seconds the supervisor waits for workers to close their clients
RESTART_MIN, RESTART_MAX = 0.2, 30.0  # back-off for a worker that keeps dying at once
REPORT_EVERY = 10.0
TRIM_AFTER = 256 << 10  # bytes queued in a burst, past which the drained heap is given back
BACKOFF, BACKOFF_MAX = 0.002, 0.05  # seconds the supervisor stops reading while ...
SINK_BEHIND = 256  # ... that is, while one of them holds this many events
CHANNEL_BEHIND = BUFFER_MAX // 2  # bytes of frames queued, past which accepts pause
FINISH_TIMEOUT = 60.0  # seconds a stopping worker waits for the supervisor to take its events


def log(message: str) -> None:
    print(f"tarry: {message}", file=sys.stderr, flush=True)


# ---- steering: which worker a peer's connections go to ---------------------------

SKF_NET_OFF = -0x100000  # classic BPF loads relative to the network header
_GOLDEN = 0x9E3779B1


def steering_program(n: int) -> bytes:
    """cBPF for a reuseport group of ``n`` sockets: the index of the socket a SYN
    goes to, from the source address (IPv4, or the first 64 bits of IPv6)."""
    asm = Asm()
    asm(LD_B_ABS, SKF_NET_OFF)  # version, header length
    asm(RSH_K, 4)
    asm(JEQ_K, 4, None, "v6")
    asm(LD_W_ABS, SKF_NET_OFF + 12)  # IPv4 source
    asm(JA, 0, "hash")  # (X is 0)
    asm.label("v6")
    asm(LD_W_ABS, SKF_NET_OFF + 8)  # IPv6 source, first word
    asm(TAX)
    asm(LD_W_ABS, SKF_NET_OFF + 12)  # second word; the /64 ends here
    asm.label("hash")
    asm(XOR_X)
    asm(MUL_K, _GOLDEN)  # Fibonacci hashing spreads neighbours apart
    asm(RSH_K, 16)
    asm(MOD_K, n)
    asm(RET_A)
    return asm.assemble()


def worker_for(host: str, n: int) -> int:
    """The worker that holds clients from ``host``: what the program computes."""
    if ":" in unmapped(host):
        raw = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        a = int.from_bytes(raw[:4], "big") ^ int.from_bytes(raw[4:8], "big")
    else:
        a = int.from_bytes(socket.inet_aton(host.rpartition(":")[2]), "big")
    return (((a * _GOLDEN) & 0xFFFFFFFF) >> 16) % n


def attach_steering(sock: socket.socket, n: int) -> None:
    attach(sock, steering_program(n), SO_ATTACH_REUSEPORT_CBPF)


def bind_group(text: str, n: int) -> list[socket.socket]:
    """``n`` listening sockets on one address, steered by source address.

    The group's order is the order of ``listen()``, so socket i is worker i's.
    A first bind without ``SO_REUSEPORT`` makes an address in use fail as it
    does without workers, instead of quietly sharing it."""

    _, port = parse_address(text)
    if port:
        bind_listener(text, listen=False).close()
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            addr = text if port or not socks else _with_port(text, socks[0])
            socks.append(bind_listener(addr, reuseport=True))
        try:
            attach_steering(socks[0], n)
        except OSError as exc:
            raise BindError(f"{text}: cannot attach the steering program: {exc.strerror}") from exc
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _with_port(text: str, sock: socket.socket) -> str:
    return f"{text.rpartition(':')[0]}:{sock.getsockname()[1]}"


# ---- memory shared between the supervisor and its workers ------------------------


class Shared:
    """Made by the supervisor before the first fork: cap counts, totals, the lock."""

    def __init__(self, n: int, rows: int) -> None:
        self.n = n
        self.rows = rows
        self.counts = column("I", n * STRIDE)
        self.stats = column("d", n * STATS)
        self.lockfd = os.memfd_create("tarry-caps", os.MFD_CLOEXEC)

    def table(self) -> dict[str, memoryview]:
        """A fresh client table for one worker: the engine's columns, the IPv6
        peers (16 bytes a row, touched only by IPv6 clients) and a flag for
        connections still waiting for their PROXY header (not clients yet)."""
        table = make_table(self.rows)
        table["ip6"] = column("B", self.rows * 16)
        table["flag"] = column("B", self.rows)
        return table

    def open_lock(self) -> int:
        """An open file description of our own: flock() excludes the others."""
        return os.open(f"/proc/self/fd/{self.lockfd}", os.O_RDWR | os.O_CLOEXEC)

    def held(self, col: int = 0) -> int:
        return sum(self.counts[col : self.n * STRIDE : STRIDE])

    def clear(self, slot: int) -> None:
        base = slot * STRIDE
        self.counts[base : base + STRIDE] = _zeros(STRIDE)
        for i in range(STATS):
            self.stats[slot * STATS + i] = 0


def _zeros(n: int) -> memoryview:
    return memoryview(bytes(4 * n)).cast("I")


def release_table(table: dict[str, memoryview]) -> None:
    """Unmap a table now rather than when the last reference goes."""
    for view in table.values():
        mem = view.obj
        view.release()
        with contextlib.suppress(BufferError, ValueError):
            mem.close()  # type: ignore[attr-defined]


# ---- the worker side ---------------------------------------------------------------


class Channel(BaseSink):
    """A worker's end of the event channel: batched, and never blocking.

    Items (events, and the listener and notes messages the supervisor needs to
    read the table) are pickled once per loop turn, or every ``BATCH_MAX``. A frame that cannot be sent
    now waits in a queue of at most ``BUFFER_MAX`` bytes; events past it are
    dropped and counted, and the count goes to the supervisor."""

    name = "workers"
    buffered = True

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self.batch: list[Any] = []
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.peak = 0  # most bytes queued since the queue was last empty
        self.dropped = 0
        self._told = 0
        self._writing = False
        self.closed = False

    # the Sink interface
    def emit(self, event: Event) -> None:
        self.put(event)

    def close(self) -> None:
        """Nothing: the worker flushes with ``finish`` after its last event."""

    def full(self, most: int = 0) -> bool:
        """Whether half the queue is taken: the engine then leaves new clients
        in the kernel's backlog until the supervisor catches up, so a burst that
        outruns it never makes the queue drop events. Not sooner: on a machine
        whose cores are all busy, the supervisor may fall seconds behind, and
        clients held back that long start to give up (SYN retries)."""
        return self.queued >= CHANNEL_BEHIND

    def put(self, item: Any) -> None:
        batch = self.batch
        batch.append(item)
        if len(batch) == 1:
            self.loop.call_soon(self.flush)
        elif len(batch) >= BATCH_MAX:
            self.flush()

    def log(self, message: str) -> None:
        self.put(("log", message))

    def flush(self) -> None:
        batch, self.batch = self.batch, []
        if self.queued > BUFFER_MAX or self.closed:
            kept = [item for item in batch if type(item) is not Event]
            self.dropped += len(batch) - len(kept)
            batch = kept
        if self.dropped != self._told and not self.closed and self.queued <= BUFFER_MAX:
            self._told = self.dropped
            batch.append(("dropped", self.dropped))
        if batch:
            for frame in self._frames(batch):
                self._send(frame)

    def _frames(self, batch: list[Any]) -> Iterator[bytes]:
        data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
        if len(data) <= FRAME_MAX:
            yield data
        elif len(batch) > 1:
            half = len(batch) // 2
            yield from self._frames(batch[:half])
            yield from self._frames(batch[half:])
        elif len(data) <= MESSAGE_MAX:
            yield data
        else:
            self.dropped += type(batch[0]) is Event

    def _send(self, frame: bytes) -> None:
        if self.closed:
            return
        if not self.queue:
            try:
                self.sock.send(frame)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.closed = True  # the supervisor is gone
                return
        self.queue.append(frame)
        self.queued += len(frame)
        self.peak = max(self.peak, self.queued)
        if not self._writing:
            self._writing = True
            self.loop.add_writer(self.sock.fileno(), self._drain)

    def _drain(self) -> None:
        while self.queue:
            frame = self.queue[0]
            try:
                self.sock.send(frame)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.closed = True
                self.queue.clear()
                self.queued = 0
                break
            self.queue.popleft()
            self.queued -= len(frame)
        self._writing = False
        self.loop.remove_writer(self.sock.fileno())
        if self.peak >= TRIM_AFTER and MALLOC_TRIM is not None:
            # the burst is over: hand the heap the queue grew into back (glibc
            # keeps freed memory in the middle of the heap otherwise)
            MALLOC_TRIM(0)
        self.peak = 0

    def finish(self, timeout: float = FINISH_TIMEOUT) -> None:
        """Send everything still here, waiting at most ``timeout`` seconds."""
        self.flush()
        if self._writing:
            self.loop.remove_writer(self.sock.fileno())
            self._writing = False
        deadline = time.monotonic() + timeout
        while self.queue and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                self.sock.send(self.queue.popleft())
            except OSError:
                break
        self.sock.setblocking(False)


class MirroredInterner(Interner):
    """Notes as the engine interns them, each new entry and each freed one also
    told to the supervisor, so it can name a dead worker's clients' notes."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def acquire(self, notes: Notes) -> int:
        new = notes not in self.ids
        i = super().acquire(notes)
        if new:
            self.channel.put(("note", i, notes))
        return i

    def release(self, i: int) -> None:
        super().release(i)
        if i and self.items[i] is None:
            self.channel.put(("note", i, None))


class SharedIp6(dict[int, bytes]):
    """The engine's IPv6 peers, also written to a shared column for the supervisor."""

    def __init__(self, col: memoryview) -> None:
        super().__init__()
        self.col = col

    def __setitem__(self, fd: int, raw: bytes) -> None:
        super().__setitem__(fd, raw)
        self.col[fd * 16 : fd * 16 + 16] = raw

    def pop(self, fd: int, default: Any = None) -> Any:
        raw = super().pop(fd, default)
        if raw is not None:
            self.col[fd * 16 : fd * 16 + 16] = bytes(16)
        return raw


class WorkerTarpit(Tarpit):
    """A tarpit whose count of clients is also published in shared memory."""

    column = -1  # 1 + its place in the config; -1 while retired or not yet placed
    _counts: memoryview | None = None
    _base = 0
    _held = 0

    @property
    def held(self) -> int:
        return self._held

    @held.setter
    def held(self, value: int) -> None:
        self._held = value
        if self.column > 0 and self._counts is not None:
            self._counts[self._base + self.column] = value


class WorkerEngine(Engine):
    """An engine that shares its caps with the other workers and publishes its
    counts and totals in shared memory, where the supervisor reads them."""

    tarpit_type = WorkerTarpit

    def __init__(
        self,
        bus: Bus,
        channel: Channel,
        shared: Shared,
        slot: int,
        table: dict[str, memoryview],
        lockfd: int,
        write_timeout: float = 300.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.slot = slot
        self.shared = shared
        self._counts = shared.counts
        self._base = slot * STRIDE
        self._stats = shared.stats
        self._sbase = slot * STATS
        self._lockfd = lockfd
        self._locks = 0
        self._held = 0
        self._poll: asyncio.TimerHandle | None = None
        super().__init__(
            bus,
            write_timeout=write_timeout,
            loop=loop,
            table=table,
            ip6=SharedIp6(table["ip6"]),
            notes=MirroredInterner(channel),
            publish_top=self._publish_top,
        )
        self.flag = table["flag"]
        self.channel = channel

    # -- counts and totals that the supervisor reads -----------------------------

    @property
    def held(self) -> int:
        return self._held

    @held.setter
    def held(self, value: int) -> None:
        self._held = value
        self._counts[self._base] = value

    def _stat(i: int) -> property:  # type: ignore[misc]
        def get(self: WorkerEngine) -> Any:
            return self.__dict__.get(f"_s{i}", 0)

        def put(self: WorkerEngine, value: Any) -> None:
            self.__dict__[f"_s{i}"] = value
            self._stats[self._sbase + i] = value

        return property(get, put)

    connects = _stat(0)
    closed_seconds = _stat(1)
    bytes_sent = _stat(2)
    del _stat

    def _publish_top(self, top: int) -> None:
        self._stats[self._sbase + 3] = top

    def refuse(self, reason: str) -> None:
        super().refuse(reason)
        self._stats[self._sbase + REFUSED_AT + REFUSALS.index(reason)] = self.refusals[reason]

    # -- caps across workers -----------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """The cap lock, re-entrant within this worker."""
        if self._locks == 0:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX)
        self._locks += 1
        try:
            yield
        finally:
            self._locks -= 1
            if self._locks == 0:
                fcntl.flock(self._lockfd, fcntl.LOCK_UN)

    def _fits(self, tarpit: Tarpit) -> bool:
        shared = self.shared
        if self.max_clients and shared.held() >= self.max_clients:
            return False
        col = tarpit.column if isinstance(tarpit, WorkerTarpit) else -1
        held = shared.held(col) if col > 0 else tarpit.held
        return held < tarpit.spec.max_clients

    def _room(self, tarpit: Tarpit) -> bool:
        return len(tarpit.parked) < PARK_MAX and self._fits(tarpit)

    def _claim(self, tarpit: Tarpit, parking: bool = True) -> bool:
        """Take a place for one more client under every shared cap, before the
        accept: under the lock, the place shows in our row before anyone else
        looks. ``_settle`` gives back a place no client took."""
        if parking and len(tarpit.parked) >= PARK_MAX:
            return False
        with self._lock():
            ok = self._fits(tarpit)
            if ok:
                self._counts[self._base] = self._held + 1
                col = getattr(tarpit, "column", -1)
                if col > 0:
                    self._counts[self._base + col] = tarpit.held + 1
        if not ok:
            self._wait_for_room()
        return ok

    def _settle(self, tarpit: Tarpit) -> None:
        self._counts[self._base] = self._held
        col = getattr(tarpit, "column", -1)
        if col > 0:
            self._counts[self._base + col] = tarpit.held

    def _on_accept(self, listener: Listener) -> None:
        try:
            super()._on_accept(listener)
        finally:
            self._settle(listener.tarpit)

    def _unpark(self, tarpit: Tarpit, ip4: int, ip6: bytes | None) -> None:
        # the place the leaving client freed may have gone to another worker
        if not self._claim(tarpit, parking=False):
            return
        try:
            super()._unpark(tarpit, ip4, ip6)
        finally:
            self._settle(tarpit)

    def _proxy_input(self, fd: int, wait: _ProxyWait, data: bytes, now: float) -> None:
        # the header swaps the row (one place out, one in): keep the place ours
        with self._lock():
            super()._proxy_input(fd, wait, data, now)
        if self.flag[fd] and type(self.objs.get(fd)) is not _ProxyWait:
            self.flag[fd] = 0  # a client now (or gone)

    def _wait_for_room(self) -> None:
        if self._poll is None and self.running:
            self._poll = self.loop.call_later(POLL, self._look_again)

    def _look_again(self) -> None:
        self._poll = None
        if not self.running:
            return
        self._resume_all()
        if any(
            lst is not None and lst.sock is not None and not lst.reading and not lst.tarpit.retired
            for lst in self.listeners
        ):
            self._wait_for_room()

    # -- rows the supervisor must be able to read ---------------------------------

    def _admit(self, listener: Listener, fd: int, peer: tuple[Any, ...]) -> None:
        super()._admit(listener, fd, peer)
        if type(self.objs.get(fd)) is _ProxyWait:
            self.flag[fd] = 1  # not a client yet: no CLOSE if the worker dies

    def _forget_row(self, fd: int, listener: Listener) -> None:
        if type(self.objs.get(fd)) is _ProxyWait:
            self.flag[fd] = 0
        super()._forget_row(fd, listener)

    # -- tarpits, reload ----------------------------------------------------------

    def add_tarpit(self, spec: TarpitSpec, bait: Bait, socks: Any) -> Tarpit:
        tarpit = super().add_tarpit(spec, bait, socks)
        assert isinstance(tarpit, WorkerTarpit)
        tarpit._counts = self._counts
        tarpit._base = self._base
        return tarpit

    def place(self, specs: list[TarpitSpec]) -> None:
        """Publish each tarpit's count in the column of its place in the config,
        and tell the supervisor what each listener index stands for."""
        base = self._base
        self._counts[base + 1 : base + STRIDE] = _zeros(STRIDE - 1)
        for tarpit in self.tarpits:
            tarpit.column = -1  # type: ignore[attr-defined]
        for i, spec in enumerate(specs, 1):
            for tarpit in self.tarpits:
                if tarpit.spec is spec and not tarpit.retired:
                    tarpit.column = i  # type: ignore[attr-defined]
                    tarpit.held = tarpit.held  # publish
        names = {
            lst.index: (lst.tarpit.spec.protocol, lst.address, lst.family)
            for lst in self.listeners
            if lst is not None
        }
        self.channel.put(("listeners", names))
        self.channel.flush()

    def apply(
        self, pairs: list[tuple[TarpitSpec, Bait]], bind: Any, release_removed: bool = True
    ) -> None:
        super().apply(pairs, bind, release_removed)
        self.place([spec for spec, _ in pairs])

    def global_clients(self, tarpit: Tarpit) -> int:
        col = getattr(tarpit, "column", -1)
        return self.shared.held(col) if col > 0 else tarpit.held


class WorkerBus(Bus):
    """The worker's bus: ACCEPT tells how many clients the tarpit holds in all workers."""

    def __init__(self, sinks: list[Sink], engine_ref: list[WorkerEngine]) -> None:
        super().__init__(sinks)
        self.engine_ref = engine_ref

    def emit(self, event: Event) -> None:
        if event.kind == "accept" and self.engine_ref:
            engine = self.engine_ref[0]
            for lst in engine.listeners:
                if lst is not None and lst.address == event.listener:
                    event.clients = engine.global_clients(lst.tarpit)
                    break
        super().emit(event)


@dataclass
class WorkerPlan:
    """What a forked worker needs; everything else it inherits and ignores."""

    slot: int
    sock: socket.socket
    table: dict[str, memoryview]
    shared: Shared
    specs: list[TarpitSpec]
    baits: list[Bait]
    socks: list[list[tuple[str, socket.socket]]]
    write_timeout: float
    max_clients: int
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
    others: list[dict[str, memoryview]]  # other workers' tables, to unmap


def _child(plan: WorkerPlan) -> int:
    """The first thing a forked worker runs: let go of what is the supervisor's."""
    gc.freeze()  # inherited objects are never collected here (nor their fds closed)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)  # the supervisor passes on what matters
    # the supervisor's stream objects may be locked by its writer threads
    sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    lockfd = plan.shared.open_lock()
    keep = {0, 1, 2, lockfd, plan.sock.fileno()}
    keep |= {sock.fileno() for socks in plan.socks for _, sock in socks}
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every number up to the limit
        open_fds = list(range(min(os.sysconf("SC_OPEN_MAX"), 1 << 16)))
    for fd in open_fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    for table in plan.others:
        release_table(table)
    if plan.loop_factory is None:
        asyncio.run(_worker(plan, lockfd))
    else:
        with asyncio.Runner(loop_factory=plan.loop_factory) as runner:
            runner.run(_worker(plan, lockfd))
    return 0


async def _worker(plan: WorkerPlan, lockfd: int) -> None:
    from .baits import registry

    loop = asyncio.get_running_loop()
    channel = Channel(plan.sock, loop)
    sinks: list[Sink] = []
    for module in registry().values():  # e.g. SSH adaptive mode's patience store
        sinks += module.sinks()
    ref: list[WorkerEngine] = []
    bus = WorkerBus([*sinks, channel], ref)
    engine = WorkerEngine(
        bus, channel, plan.shared, plan.slot, plan.table, lockfd, plan.write_timeout, loop
    )
    ref.append(engine)
    engine.log = channel.log
    engine.set_max_clients(plan.max_clients)
    for spec, bait, socks in zip(plan.specs, plan.baits, plan.socks, strict=True):
        engine.add_tarpit(spec, bait, socks)
    engine.place(plan.specs)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)

    def command() -> None:
        try:
            msg, fds, _, _ = socket.recv_fds(plan.sock, MESSAGE_MAX, 250)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            msg, fds = b"", []
        if not msg:  # the supervisor is gone: nobody would log what we do
            loop.remove_reader(plan.sock.fileno())
            stopping.set()
            return
        if msg[:1] == b"R":
            _reload(engine, msg[1:], fds)
        else:
            for fd in fds:
                os.close(fd)

    loop.add_reader(plan.sock.fileno(), command)
    engine.start()
    try:
        await stopping.wait()
    finally:
        engine.stop()
        with contextlib.suppress(Exception):
            loop.remove_reader(plan.sock.fileno())
        channel.finish()


def _reload(engine: WorkerEngine, payload: bytes, fds: list[int]) -> None:
    """The supervisor's new config, with this worker's socket for every address."""
    specs, write_timeout, max_clients, addresses, where = pickle.loads(payload)
    socks = {addr: socket.socket(fileno=fd) for addr, fd in zip(addresses, fds, strict=True)}

    def bind(addr: str) -> socket.socket:
        try:
            return socks.pop(addr)
        except KeyError:
            raise BindError(f"{addr}: the supervisor passed no socket for it") from None

    try:
        baits = make_baits(specs, where_in(where))
        engine.apply(list(zip(specs, baits, strict=True)), bind, release_removed=True)
    except Exception as exc:  # a worker keeps its old config rather than die
        engine.log(f"reload rejected by this worker, its old config keeps running: {exc}")
    else:
        engine.write_timeout = write_timeout
        engine.set_max_clients(max_clients)
    finally:
        for sock in socks.values():
            sock.close()


# ---- the supervisor ----------------------------------------------------------------


@dataclass(eq=False)
class Slot:
    """One worker's place: its process, channel and table, and what its messages said."""

    index: int
    pid: int = 0
    sock: socket.socket | None = None
    table: dict[str, memoryview] | None = None
    listeners: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    notes: dict[int, Notes] = field(default_factory=dict)
    started: float = 0.0
    backoff: float = 0.0
    restart: asyncio.TimerHandle | None = None
    pause: float = 0.0  # seconds reading last paused for a sink to catch up
    dropped: int = 0


class Supervisor:
    """Binds, forks the workers, turns their messages into events on its bus,
    passes signals on, restarts a worker that dies and logs its clients closed."""

    def __init__(
        self,
        cfg: Any,
        path: str | None,
        activation: Any,
        bus: Bus,
        baits: list[Bait],
        groups: dict[str, list[socket.socket]],
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.activation = activation
        self.bus = bus
        self.baits = baits
        self.groups = groups
        self.loop_factory = loop_factory
        self.n = cfg.workers
        self.shared = Shared(self.n, table_rows(raise_fd_limit()))
        self.slots = [Slot(i) for i in range(self.n)]
        self.retired = [0.0] * STATS  # connects, seconds, bytes, -, refusals of workers gone
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._buf = bytearray(MESSAGE_MAX + 1)
        self._all_gone: asyncio.Event | None = None
        self._dropped_at = 0.0

    # -- workers -------------------------------------------------------------------

    def spawn(self, slot: Slot) -> None:
        slot.restart = None
        if self.stopping:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        table = self.shared.table()
        self.shared.clear(slot.index)
        plan = WorkerPlan(
            slot=slot.index,
            sock=theirs,
            table=table,
            shared=self.shared,
            specs=self.cfg.tarpits,
            baits=self.baits,
            socks=[
                [(addr, self.groups[addr][slot.index]) for addr in spec.listen]
                for spec in self.cfg.tarpits
            ],
            write_timeout=self.cfg.write_timeout,
            max_clients=self.cfg.max_clients,
            loop_factory=self.loop_factory,
            others=[s.table for s in self.slots if s.table is not None],
        )
        sys.stdout.flush()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with sink threads
                pid = os.fork()
        except OSError as exc:
            ours.close()
            theirs.close()
            release_table(table)
            slot.backoff = min(RESTART_MAX, max(RESTART_MIN, slot.backoff * 2))
            log(
                f"worker {slot.index}: cannot fork ({exc.strerror}); trying again in {slot.backoff:g}s"
            )
            assert self.loop is not None
            slot.restart = self.loop.call_later(slot.backoff, self.spawn, slot)
            return
        if pid == 0:
            code = 1
            try:
                code = _child(plan)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        slot.pid, slot.sock, slot.table = pid, ours, table
        slot.listeners, slot.notes = {}, {}
        slot.started = time.monotonic()
        assert self.loop is not None
        self.loop.add_reader(ours.fileno(), self.read, slot)
        log(f"worker {slot.index} started (pid {pid})")

    def read(self, slot: Slot) -> None:
        """Frames from a worker, a bounded number per call so no worker starves the
        rest. While a sink holds ``SINK_BEHIND`` events, reading pauses (2 ms,
        doubling while it lasts): the events wait in the workers as compact
        frames, never blocking them, instead of as objects here, where a
        burst's high-water mark would stay resident, or being dropped."""
        sock = slot.sock
        if sock is None:
            return
        assert self.loop is not None
        for _ in range(16):
            if self.bus.behind(SINK_BEHIND):
                slot.pause = min(slot.pause * 2, BACKOFF_MAX) if slot.pause else BACKOFF
                self.loop.remove_reader(sock.fileno())
                self.loop.call_later(slot.pause, self._resume_reading, slot, sock)
                return
            slot.pause = 0.0
            try:
                n = sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            if n == 0:
                assert self.loop is not None
                self.loop.remove_reader(sock.fileno())
                return
            try:
                items = pickle.loads(memoryview(self._buf)[:n])
            except Exception as exc:
                log(f"worker {slot.index}: unreadable frame ({exc!r}); skipped")
                continue
            self.handle(slot, items)

    def _resume_reading(self, slot: Slot, sock: socket.socket) -> None:
        if slot.sock is sock and self.loop is not None:
            self.loop.add_reader(sock.fileno(), self.read, slot)

    def handle(self, slot: Slot, items: list[Any]) -> None:
        emit = self.bus.emit
        for item in items:
            if type(item) is Event:
                if item.kind != TOTALS:  # the supervisor sums totals itself
                    emit(item)
                continue
            kind = item[0]
            if kind == "note":
                if item[2] is None:
                    slot.notes.pop(item[1], None)
                else:
                    slot.notes[item[1]] = item[2]
            elif kind == "listeners":
                slot.listeners = item[1]
            elif kind == "log":
                log(f"worker {slot.index}: {item[1]}")
            elif kind == "dropped":
                self.dropped_by(slot, item[1])

    def dropped_by(self, slot: Slot, count: int) -> None:
        slot.dropped = count
        now = time.monotonic()
        if now >= self._dropped_at:
            self._dropped_at = now + REPORT_EVERY
            log(
                f"worker {slot.index} could not send {count} events in all "
                "(the supervisor fell behind); they were dropped"
            )

    # read by the metrics as a sink (tarry.events.Sink) whose drops are the workers'
    name = "workers"
    buffered = True
    failed = 0
    stuck = False

    @property
    def dropped(self) -> int:
        """Events workers dropped because the supervisor fell behind."""
        return sum(s.dropped for s in self.slots)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    self.gone(slot, status)
                    break

    def gone(self, slot: Slot, status: int) -> None:
        """A worker exited: log what it still held as closed, then start another."""
        self.read_to_end(slot)
        assert self.loop is not None
        if slot.table is None:
            return
        reason = "shutdown" if self.stopping else "worker-died"
        closed = self.close_rows(slot, reason)
        base = slot.index * STATS
        for i in (0, 1, 2, *range(REFUSED_AT, STATS)):
            self.retired[i] += self.shared.stats[base + i]
        self.shared.clear(slot.index)
        release_table(slot.table)
        slot.table = None
        pid, slot.pid = slot.pid, 0
        if os.WIFSIGNALED(status):
            how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            how = f"exited with status {os.WEXITSTATUS(status)}"
        if self.stopping:
            if closed:
                log(f"worker {slot.index} (pid {pid}) {how}; its {closed} clients logged closed")
            if all(s.pid == 0 for s in self.slots) and self._all_gone is not None:
                self._all_gone.set()
            return
        quick = time.monotonic() - slot.started < 5.0
        slot.backoff = min(RESTART_MAX, max(RESTART_MIN, slot.backoff * 2)) if quick else 0.0
        log(
            f"worker {slot.index} (pid {pid}) {how}; {closed} clients logged closed "
            f"(reason={reason}); restarting it" + (f" in {slot.backoff:g}s" if slot.backoff else "")
        )
        slot.restart = self.loop.call_later(slot.backoff, self.spawn, slot)

    def read_to_end(self, slot: Slot) -> None:
        sock = slot.sock
        if sock is None:
            return
        assert self.loop is not None
        with contextlib.suppress(Exception):
            self.loop.remove_reader(sock.fileno())
        while True:
            try:
                n = sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError, OSError):
                break
            if n == 0:
                break
            with contextlib.suppress(Exception):
                self.handle(slot, pickle.loads(memoryview(self._buf)[:n]))
        sock.close()
        slot.sock = None

    def close_rows(self, slot: Slot, reason: str) -> int:
        """A CLOSE for every client left in a dead worker's table."""
        table = slot.table
        assert table is not None
        top = int(self.shared.stats[slot.index * STATS + 3])
        lst, flag, ip6 = table["lst"], table["flag"], table["ip6"]
        now, wall = time.monotonic(), time.time()
        closed = 0
        for fd in range(min(top, len(lst))):
            index = lst[fd]
            if not index or flag[fd]:
                continue
            proto, address, family = slot.listeners.get(index, ("", "", socket.AF_INET))
            raw6 = bytes(ip6[fd * 16 : fd * 16 + 16])
            host = unpack_host(table["ip4"][fd], raw6 if any(raw6) else None, family)
            duration = ms_age(table["t0"][fd], now)
            self.retired[1] += duration
            closed += 1
            self.bus.emit(
                Event(
                    CLOSE,
                    wall,
                    proto,
                    address,
                    host,
                    table["port"][fd],
                    fd,
                    duration=duration,
                    sent=table["sent"][fd],
                    received=table["recv"][fd],
                    reason=reason,
                    notes=slot.notes.get(table["note"][fd], ()),
                )
            )
        return closed

    # -- signals -------------------------------------------------------------------

    def totals(self) -> Event:
        """TOTALS over every worker, past and present, with the seconds of the
        clients held now (read from the tables)."""
        connects, seconds, sent = self.retired[:3]
        stats = self.shared.stats
        now = time.monotonic()
        for slot in self.slots:
            if slot.table is None:
                continue
            base = slot.index * STATS
            connects += stats[base]
            seconds += stats[base + 1]
            sent += stats[base + 2]
            seconds += sum(age for _, _, age in self._rows(slot, now))
        return Event(TOTALS, time.time(), connects=int(connects), duration=seconds, sent=int(sent))

    def _rows(self, slot: Slot, now: float) -> Iterator[tuple[int, int, float]]:
        """(fd, listener index, seconds held) of each client a live worker holds
        (at most 31 days for the rare client held longer: see Engine.age)."""
        table = slot.table
        if table is None:
            return
        top = int(self.shared.stats[slot.index * STATS + 3])
        lst, t0, flag = table["lst"], table["t0"], table["flag"]
        for fd in range(min(top, len(lst))):
            index = lst[fd]
            if index and not flag[fd]:
                yield fd, index, ms_age(t0[fd], now)

    def reload(self) -> None:
        from .config import ConfigError, load

        if self.path is None:
            log("SIGHUP: running the embedded defaults; nothing to re-read")
            return
        fresh: dict[str, list[socket.socket]] = {}
        try:
            new = load(self.path)
            self.activation.assign(new.tarpits)
            if len(new.tarpits) > MAX_TARPITS:
                raise ConfigError(f"{self.path}: more than {MAX_TARPITS} [[tarpit]] tables")
            if new.workers != self.n:
                log(f"[engine] workers = {new.workers} takes a restart; {self.n} keep running")
            baits = make_baits(new.tarpits, where_in(new.path))
            for spec in new.tarpits:
                for addr in spec.listen:
                    if addr not in self.groups and addr not in fresh:
                        fresh[addr] = self.bind(addr)
        except (ConfigError, BindError) as exc:
            for socks in fresh.values():
                self.let_go(socks)
            log(f"reload rejected, the old config keeps running: {exc}")
            return
        self.groups.update(fresh)
        wanted = {addr for spec in new.tarpits for addr in spec.listen}
        old, self.cfg, self.baits = self.cfg, new, baits
        addresses = sorted(wanted)
        payload = pickle.dumps(
            (new.tarpits, new.write_timeout, new.max_clients, addresses, new.path)
        )
        for slot in self.slots:
            if slot.sock is None:
                continue
            fds = [self.groups[addr][slot.index].fileno() for addr in addresses]
            try:
                socket.send_fds(slot.sock, [b"R" + payload], fds)
            except OSError as exc:
                log(f"worker {slot.index} did not take the reload ({exc.strerror}); restarting it")
                with contextlib.suppress(OSError):
                    os.kill(slot.pid, signal.SIGKILL)
        for addr in [a for a in self.groups if a not in wanted]:
            self.let_go(self.groups.pop(addr))
        said_changes(log, self.path, old, new)
        self.announce()

    def bind(self, addr: str) -> list[socket.socket]:
        passed = self.activation.lend(addr)
        if passed is not None:
            return [passed] * self.n
        return bind_group(addr, self.n)

    def let_go(self, socks: list[socket.socket]) -> None:
        for sock in dict.fromkeys(socks):
            self.activation.discard(sock)

    def announce(self) -> None:
        for spec in self.cfg.tarpits:
            for addr in spec.listen:
                sock = self.groups[addr][0]
                host, port = sock.getsockname()[:2]
                address = format_address(sock.family, host, port)
                line = listen_line(spec.protocol, address, spec.delay, spec.max_clients, spec.mode)
                print(line, flush=True)

    def clients_held(self) -> int:
        return self.shared.held()

    def status_text(self) -> str:
        return f"holding {self.clients_held()} clients on {len(self.groups)} listeners in {self.n} workers"

    # -- the dashboard's view ----------------------------------------------------

    def snapshot(self, limit: int = 20) -> list[dict[str, Any]]:
        now = time.monotonic()
        rows = heapq.nlargest(
            limit,
            (
                (age, slot, fd, index)
                for slot in self.slots
                for fd, index, age in self._rows(slot, now)
            ),
            key=lambda r: r[0],
        )
        out = []
        for age, slot, fd, index in rows:
            table = slot.table
            if table is None:
                continue
            proto, address, family = slot.listeners.get(index, ("", "", socket.AF_INET))
            raw6 = bytes(table["ip6"][fd * 16 : fd * 16 + 16])
            out.append(
                {
                    "proto": proto,
                    "listener": address,
                    "host": unpack_host(table["ip4"][fd], raw6 if any(raw6) else None, family),
                    "port": table["port"][fd],
                    "age": age,
                    "sent": table["sent"][fd],
                    "received": table["recv"][fd],
                    "notes": dict(slot.notes.get(table["note"][fd], ())),
                }
            )
        return out

    def refused_by_reason(self) -> dict[str, int]:
        """Refusals by reason, summed over every worker, past and present."""
        out = {}
        for i, reason in enumerate(REFUSALS, REFUSED_AT):
            n = self.retired[i]
            for slot in self.slots:
                if slot.table is not None:
                    n += self.shared.stats[slot.index * STATS + i]
            out[reason] = int(n)
        return out

    def held_by_protocol(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, spec in enumerate(self.cfg.tarpits, 1):
            out[spec.protocol] = out.get(spec.protocol, 0) + self.shared.held(i)
        return out

    def live(self) -> dict[tuple[str, str], tuple[int, float, int]]:
        now = time.monotonic()
        acc: dict[tuple[str, str], list[float]] = {}
        for slot in self.slots:
            table = slot.table
            if table is None:
                continue
            sent = table["sent"]
            for fd, index, age in self._rows(slot, now):
                proto, address, _ = slot.listeners.get(index, ("", "", 0))
                row = acc.setdefault((proto, address), [0, 0.0, 0])
                row[0] += 1
                row[1] += age
                row[2] += sent[fd]
        return {k: (int(v[0]), v[1], int(v[2])) for k, v in acc.items()}

    # -- running -------------------------------------------------------------------

    def start(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.announce()
        for slot in self.slots:
            self.spawn(slot)

    def emit_totals(self) -> None:
        self.bus.emit(self.totals())

    async def stop(self) -> None:
        """SIGTERM to every worker (each logs a CLOSE per client), then one TOTALS."""
        self.stopping = True
        self._all_gone = asyncio.Event()
        for slot in self.slots:
            if slot.restart is not None:
                slot.restart.cancel()
                slot.restart = None
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGTERM)
        for sig in (signal.SIGKILL, None):
            if all(s.pid == 0 for s in self.slots):
                break
            try:
                await asyncio.wait_for(self._all_gone.wait(), STOP_TIMEOUT)
            except TimeoutError:
                if sig is None:
                    break
                for slot in self.slots:
                    if slot.pid:
                        log(f"worker {slot.index} (pid {slot.pid}) did not stop; killing it")
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(slot.pid, sig)
        self.reap()
        self.bus.emit(self.totals())


def bind_groups(
    specs: list[TarpitSpec], n: int, activation: Any, where: Callable[[int, TarpitSpec], str]
) -> dict[str, list[socket.socket]]:
    """Every listen address of every tarpit, one socket per worker (a socket
    systemd passed is one queue all workers share)."""
    from .config import ConfigError

    groups: dict[str, list[socket.socket]] = {}
    try:
        for i, spec in enumerate(specs, 1):
            for addr in spec.listen:
                passed = activation.lend(addr)
                if passed is not None:
                    groups[addr] = [passed] * n
                    continue
                try:
                    groups[addr] = bind_group(addr, n)
                except BindError as exc:
                    raise ConfigError(f"{where(i, spec)}listen: {exc}") from None
    except ConfigError:
        for socks in groups.values():
            for sock in dict.fromkeys(socks):
                activation.discard(sock)
        raise
    return groups


def serve_workers(
    cfg: Any,
    path: str | None,
    activation: Any,
    notifier: Any,
    baits: list[Bait],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> int:
    """``tarry serve`` with ``[engine] workers`` above 1."""
    from .config import ConfigError

    if len(cfg.tarpits) > MAX_TARPITS:
        fail(f"{cfg.path}: more than {MAX_TARPITS} [[tarpit]] tables with workers")
    try:
        groups = bind_groups(cfg.tarpits, cfg.workers, activation, where_in(cfg.path))
    except ConfigError as exc:
        fail(str(exc))
    shared_queues = [addr for addr, socks in groups.items() if len(set(socks)) == 1]
    if shared_queues and any(s.max_clients_per_ip for s in cfg.tarpits):
        log(
            f"passed sockets ({', '.join(shared_queues)}) are one accept queue for all "
            f"{cfg.workers} workers: max_clients_per_ip is counted per worker there"
        )
    sinks, start_admin = observability(cfg, activation, bait_sinks=False)
    bus = Bus(sinks)
    sup = Supervisor(cfg, path, activation, bus, baits, groups, loop_factory)
    for sink in sinks:  # the metrics export the workers' dropped events too
        if isinstance(sink, Metrics):
            sink.sinks.append(sup)
    print(config_line(path), file=sys.stderr, flush=True)
    admin = (start_admin, "admin" in cfg.sections)
    try:
        asyncio.run(run(sup, bus, notifier, admin, cfg))
    except OSError as exc:
        if exc.errno == errno.EMFILE:
            fail("out of file descriptors in the supervisor")
        raise
    return 0
