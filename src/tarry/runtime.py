"""What every run mode shares: making baits, binding, the privilege drop, the
observability set-up, the admin listener, systemd notifications, signals and
reload. A run mode is a `Host`: one process holding every client (`EngineHost`,
also the endlessh drop-in) or a supervisor of workers (tarry.workers); `run`
drives either the same way.

Every mistake in what the user wrote becomes one line on stderr and a non-zero
exit (`fail`), never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from .bait import Bait, TarpitSpec
from .baits import registry
from .config import SYSTEM_CONFIG, Config, ConfigError, load
from .engine import Engine
from .events import Bus, Sink, listen_line, stamp
from .net import BindError, bind_listener
from .systemd import Activation, Notifier, monotonic_usec

if TYPE_CHECKING:
    from .admin import AdminServer
    from .observe import Preflight

STATUS_EVERY = 1.0  # seconds between STATUS= updates (sent only when the text changes)
Where = Callable[[int, TarpitSpec], str]
Live = dict[tuple[str, str], tuple[int, float, int]]
StartAdmin = Callable[..., Any]


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"tarry: {message}", file=sys.stderr)
    raise SystemExit(code)


def warn(message: str) -> None:
    print(f"tarry: {message}", file=sys.stderr)


def _warner(prefix: str) -> Callable[[str], None]:
    """``warn`` with ``prefix`` (the file and table) before each message."""
    return lambda message: warn(prefix + message)


def where_in(path: str) -> Where:
    """How errors name a ``[[tarpit]]`` table of the file at ``path``."""
    return lambda i, spec: f"{path}: [[tarpit]] #{i} ({spec.protocol}) "


def make_baits(specs: list[TarpitSpec], where: Where) -> list[Bait]:
    baits = []
    for i, spec in enumerate(specs, 1):
        try:
            bait = registry()[spec.protocol].make(spec)
            if spec.options.get("tls") or spec.options.get("starttls"):
                from . import tls  # ssl and certificates only for a config that uses them

                # TLS (implicit or STARTTLS) wraps any bait whose spec asks for it.
                try:
                    bait = tls.wrap(spec, bait, warn=_warner(where(i, spec)))
                except tls.CertError as exc:
                    raise ConfigError(str(exc)) from None
            baits.append(bait)
        except ConfigError as exc:
            raise ConfigError(f"{where(i, spec)}{exc}") from None
    return baits


def bind_all(
    specs: list[TarpitSpec],
    where: Where,
    bind: Callable[[str], socket.socket] = bind_listener,
    discard: Callable[[socket.socket], None] = socket.socket.close,
) -> list[list[tuple[str, socket.socket]]]:
    """Bind every address before anything runs, so a bad one stops start-up cleanly."""
    bound: list[list[tuple[str, socket.socket]]] = []
    try:
        for i, spec in enumerate(specs, 1):
            socks: list[tuple[str, socket.socket]] = []
            bound.append(socks)
            for addr in spec.listen:
                try:
                    socks.append((addr, bind(addr)))
                except BindError as exc:
                    raise ConfigError(f"{where(i, spec)}listen: {exc}") from None
    except ConfigError:
        for socks in bound:
            for _, sock in socks:
                discard(sock)
        raise
    return bound


def event_loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for, or with "auto" when it is installed (tarry[fast])."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigError(
                "[engine] loop = \"uvloop\" needs the 'fast' extra (pip install 'tarry[fast]')"
            ) from None
        return None
    return uvloop.new_event_loop


def prepare(cfg: Config) -> tuple[list[Bait], Callable[[], asyncio.AbstractEventLoop] | None]:
    """The baits and the event loop factory, and, as root, the user and group
    to become: the checks serve and check-config share before binding
    (ConfigError when one fails)."""
    if os.geteuid() == 0 and not cfg.allow_root:
        from .privileges import PrivilegeError, resolve

        try:
            resolve(cfg.user, cfg.group)
        except PrivilegeError as exc:
            raise ConfigError(f"{cfg.path}: {exc}") from None
    baits = make_baits(cfg.tarpits, where_in(cfg.path))
    try:
        return baits, event_loop_factory(cfg.loop)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.path}: {exc}") from None


def drop_privileges(cfg: Config, checked: Preflight | None = None) -> None:
    """As root: hand over the state directory, load what the config uses
    (``checked`` is what observe.preflight found), then become [privileges] user."""
    from .observe import modules
    from .paths import state_dir
    from .privileges import PrivilegeError, drop

    needs = modules(cfg.sections, checked)
    if any(s.options.get("tls") or s.options.get("starttls") for s in cfg.tarpits):
        needs += ["tarry.tls", "ssl"]
    if cfg.loop != "asyncio":
        needs.append("uvloop")
    if cfg.workers > 1:
        needs += ["tarry.workers", "pickle"]

    history = cfg.sections.get("history", {})
    writable = []
    if history.get("enabled", True):
        from .history import default_path

        writable.append(Path(history.get("path") or default_path()).parent)
    try:
        done = drop(cfg.user, cfg.group, cfg.allow_root, state_dir(), writable, needs)
    except PrivilegeError as exc:
        fail(f"{cfg.path}: {exc}")
    if done:
        print(f"tarry: {done}", file=sys.stderr, flush=True)


def check_files(cfg: Config) -> None:
    """check-config: the log file and the history directory, as the user serve
    drops to (it opens them after the switch); ConfigError when one fails."""
    from .history import default_path
    from .paths import state_dir
    from .privileges import PrivilegeError, check_writable_as, resolve

    log, history = cfg.sections.get("log", {}), cfg.sections.get("history", {})
    files = [Path(log["file"])] if log.get("file") else []
    dirs = []
    if history.get("enabled", True) and not history.get("url"):
        where = Path(history.get("path") or default_path()).parent
        if where != state_dir():  # serve creates that one and hands it over
            dirs.append(where)
    try:
        target = None
        if os.geteuid() == 0 and not cfg.allow_root:
            target = resolve(cfg.user, cfg.group)
        problem = check_writable_as(target, files, dirs)
    except PrivilegeError as exc:
        problem = str(exc)
    if problem:
        raise ConfigError(f"{cfg.path}: {problem}")


def observability(
    cfg: Config, activation: Activation, bait_sinks: bool
) -> tuple[list[Sink], StartAdmin | None]:
    """After binding: say which passed sockets went unused, check the
    observability sections as check-config does, drop privileges, then build
    the sinks (and the bait modules' own when ``bait_sinks``: a supervisor's
    workers keep theirs) and the admin starter."""
    from .observe import ObserveError, build, preflight

    for inh in activation.unused():
        warn(
            f"passed socket {inh.address} ({inh.name}) matches no [[tarpit]] name or "
            "listen address; kept unused for a reload"
        )
    try:
        checked = preflight(cfg.sections)  # as check-config does, and before the switch
    except ObserveError as exc:
        fail(f"{cfg.path}: {exc}")
    drop_privileges(cfg, checked)
    try:
        sinks, start_admin = build(cfg.sections, stdout=sys.stdout, checked=checked)
    except ObserveError as exc:
        fail(f"{cfg.path}: {exc}")
    if bait_sinks:
        for module in registry().values():  # e.g. the SSH adaptive mode's patience store
            sinks += module.sinks()
    return sinks, start_admin


def config_line(path: str | None) -> str:
    """Which file runs, said once it runs: an error stays one line."""
    shown = path or f"the embedded defaults (no -c, no {SYSTEM_CONFIG})"
    return f"tarry: config {shown}"


def stores_line(cfg: Config, admin: AdminServer | None) -> str:
    """The one line that says where the history goes and where the dashboard is."""
    from .observe import history_where

    url = admin.url if admin is not None else "off"
    return f"{stamp(time.time())} OBSERVE history={history_where(cfg.sections)} admin={url}"


def said_changes(log: Callable[[str], None], path: str, old: Config, new: Config) -> None:
    """After a reload: how many changes, then one line for each."""
    from .changes import changes

    said = changes(old, new)
    log(f"reloaded {path}: {len(said) or 'no'} change(s)")
    for line in said:
        log(f"reload: {line}")


class Host(Protocol):
    """A run mode, as `run`, the admin listener and systemd see it."""

    def start(self) -> None:
        """Begin accepting (the event loop runs)."""
        ...

    async def stop(self) -> None:
        """Release every client (a CLOSE each), then log TOTALS."""
        ...

    def reload(self) -> None:
        """SIGHUP: re-read the config; on any error keep the old one and say why."""
        ...

    def emit_totals(self) -> None:
        """SIGUSR1: log TOTALS now."""
        ...

    def clients_held(self) -> int: ...

    def status_text(self) -> str:
        """systemd's STATUS= text."""
        ...

    # the dashboard's and /metrics' views
    def snapshot(self, limit: int = 20) -> list[dict[str, Any]]: ...

    def held_by_protocol(self) -> dict[str, int]: ...

    def live(self) -> Live: ...

    def refused_by_reason(self) -> dict[str, int]: ...


async def start_admin(host: Host, start: StartAdmin | None, explicit: bool) -> AdminServer | None:
    """The admin listener; a default one that cannot bind is a warning, a configured one fatal."""
    if start is None:
        return None
    from .admin import AdminError

    try:
        admin: AdminServer = await start(
            host.snapshot, host.held_by_protocol, host.live, host.refused_by_reason
        )
    except AdminError as exc:
        if explicit:
            fail(str(exc))
        print(f"tarry: dashboard off: {exc}", file=sys.stderr, flush=True)
        return None
    print(
        f"{stamp(time.time())} ADMIN listener={admin.host}:{admin.port} url={admin.url}", flush=True
    )
    return admin


def _notify_ready(host: Host, notifier: Notifier, loop: asyncio.AbstractEventLoop) -> list[Any]:
    """READY=1 now, then STATUS= while it changes and WATCHDOG=1 when asked for.
    Both run on the event loop, so a stuck loop stops the watchdog pings."""
    if not notifier.enabled:
        return []
    notifier.last_status = host.status_text()
    notifier.send("READY=1", f"STATUS={notifier.last_status}")
    timers: list[Any] = [None, None]

    def status() -> None:
        notifier.status(host.status_text())
        timers[0] = loop.call_later(STATUS_EVERY, status)

    def watchdog() -> None:
        notifier.send("WATCHDOG=1")
        timers[1] = loop.call_later(notifier.watchdog / 2, watchdog)

    status()
    if notifier.watchdog:
        watchdog()
    return timers  # the live handles: the callbacks replace them as they go


async def run(
    host: Host,
    bus: Bus,
    notifier: Notifier | None = None,
    admin: tuple[StartAdmin | None, bool] = (None, False),
    cfg: Config | None = None,
) -> None:
    """Run ``host`` until SIGTERM or SIGINT: SIGHUP reloads, SIGUSR1 logs
    TOTALS. ``admin`` is the listener's starter and whether the config asked
    for it; with ``cfg``, the OBSERVE line follows it."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def reload() -> None:
        if notifier is not None:
            notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")
        try:
            host.reload()
        finally:
            if notifier is not None:
                notifier.send("READY=1", f"STATUS={host.status_text()}")

    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, host.emit_totals)
    host.start()
    server = await start_admin(host, *admin)
    if cfg is not None:
        print(stores_line(cfg, server), flush=True)
    timers = _notify_ready(host, notifier, loop) if notifier is not None else []
    try:
        await stopping.wait()
    finally:
        for timer in timers:
            if timer is not None:
                timer.cancel()
        if notifier is not None:
            notifier.send("STOPPING=1", f"STATUS=stopping, releasing {host.clients_held()} clients")
        await host.stop()
        if server is not None:
            await server.close()
        bus.close()
        if notifier is not None:
            notifier.close()


def announce(engine: Engine) -> None:
    """A LISTEN line for every listening socket."""
    for listener in engine.listeners:
        if listener is not None and listener.sock is not None:
            spec = listener.tarpit.spec
            line = listen_line(
                spec.protocol, listener.address, spec.delay, spec.max_clients, spec.mode
            )
            print(line, flush=True)


class EngineHost:
    """One process holds every client: the `Host` around an `Engine`.
    ``reread`` gives the new tables on SIGHUP (ConfigError or BindError when it
    cannot); None means nothing to re-read."""

    def __init__(self, engine: Engine, reread: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.reread = reread

    def start(self) -> None:
        self.engine.start()

    async def stop(self) -> None:
        self.engine.stop()

    def reload(self) -> None:
        if self.reread is None:
            self.engine.log("SIGHUP: running the embedded defaults; nothing to re-read")
            return
        self.reread()

    def emit_totals(self) -> None:
        self.engine.emit_totals()

    def clients_held(self) -> int:
        return self.engine.held

    def status_text(self) -> str:
        engine = self.engine
        listeners = sum(1 for lst in engine.listeners if lst is not None and lst.sock is not None)
        return f"holding {engine.held} clients on {listeners} listeners"

    def snapshot(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.engine.snapshot(limit)

    def held_by_protocol(self) -> dict[str, int]:
        return self.engine.held_by_protocol()

    def live(self) -> Live:
        return self.engine.live_totals()

    def refused_by_reason(self) -> dict[str, int]:
        return self.engine.refused_by_reason()


def serve_one(
    cfg: Config,
    path: str | None,
    activation: Activation,
    notifier: Notifier,
    baits: list[Bait],
    factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> int:
    """``tarry serve`` in one process."""
    try:
        bound = bind_all(cfg.tarpits, where_in(cfg.path), activation.bind, activation.discard)
    except ConfigError as exc:
        fail(str(exc))
    sinks, admin = observability(cfg, activation, bait_sinks=True)
    bus = Bus(sinks)
    current: list[Config] = [cfg]

    async def main() -> None:
        engine = Engine(bus, write_timeout=cfg.write_timeout, loop=asyncio.get_running_loop())
        engine.set_max_clients(cfg.max_clients)
        engine.discard_socket = activation.discard
        for spec, bait, socks in zip(cfg.tarpits, baits, bound, strict=True):
            engine.add_tarpit(spec, bait, socks)
        print(config_line(path), file=sys.stderr, flush=True)
        announce(engine)

        def reread() -> None:
            assert path is not None
            try:
                new = load(path)
                activation.assign(new.tarpits)
                new_baits = make_baits(new.tarpits, where_in(new.path))
                engine.apply(
                    list(zip(new.tarpits, new_baits, strict=True)),
                    activation.bind,
                    release_removed=True,
                )
            except (ConfigError, BindError) as exc:
                engine.log(f"reload rejected, the old config keeps running: {exc}")
                return
            engine.write_timeout = new.write_timeout
            engine.set_max_clients(new.max_clients)
            said_changes(engine.log, path, current[0], new)
            current[0] = new
            announce(engine)

        host = EngineHost(engine, reread if path is not None else None)
        await run(host, bus, notifier, (admin, "admin" in cfg.sections), cfg)

    if factory is None:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    return 0
