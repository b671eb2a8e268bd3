"""The ``tarry`` command: ``serve``, the endlessh drop-in ``ssh``, and config tools.

Every mistake in what the user typed or wrote becomes one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getopt
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .bait import Bait, TarpitSpec
from .baits import registry
from .config import (
    ENDLESSH_CONFIG,
    SYSTEM_CONFIG,
    Config,
    ConfigError,
    EndlesshConfig,
    EndlesshError,
    endlessh_set,
    load,
    load_endlessh,
    system_config,
)
from .engine import Engine
from .events import Bus, Sink, listen_line, stamp
from .net import BindError, bind_listener
from .systemd import Activation, ActivationError, Notifier, listen_fds, monotonic_usec

if TYPE_CHECKING:
    from .observe import Preflight


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"tarry: {message}", file=sys.stderr)
    raise SystemExit(code)


def make_baits(specs: list[TarpitSpec], where: Callable[[int, TarpitSpec], str]) -> list[Bait]:
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


def warn(message: str) -> None:
    print(f"tarry: {message}", file=sys.stderr)


def _warner(prefix: str) -> Callable[[str], None]:
    """``warn`` with ``prefix`` (the file and table) before each message."""
    return lambda message: warn(prefix + message)


def bind_all(
    specs: list[TarpitSpec],
    where: Callable[[int, TarpitSpec], str],
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


def _where(path: str) -> Callable[[int, TarpitSpec], str]:
    return lambda i, spec: f"{path}: [[tarpit]] #{i} ({spec.protocol}) "


async def _serve(
    engine: Engine, bus: Bus, reload: Callable[[], None], notifier: Notifier | None = None
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, engine.emit_totals)
    engine.start()
    timers = _notify_ready(engine, notifier) if notifier is not None else []
    try:
        await stopping.wait()
    finally:
        for timer in timers:
            if timer is not None:
                timer.cancel()
        if notifier is not None:
            notifier.send("STOPPING=1", f"STATUS=stopping, releasing {engine.held} clients")
        engine.stop()
        bus.close()
        if notifier is not None:
            notifier.close()


STATUS_EVERY = 1.0  # seconds between STATUS= updates (sent only when the text changes)


def status_text(engine: Engine) -> str:
    listeners = sum(1 for lst in engine.listeners if lst is not None and lst.sock is not None)
    return f"holding {engine.held} clients on {listeners} listeners"


def _notify_ready(engine: Engine, notifier: Notifier) -> list[Any]:
    """READY=1 now, then STATUS= while it changes and WATCHDOG=1 when asked for.
    Both run on the event loop, so a stuck loop stops the watchdog pings."""
    if not notifier.enabled:
        return []
    loop = engine.loop
    notifier.last_status = status_text(engine)
    notifier.send("READY=1", f"STATUS={notifier.last_status}")
    timers: list[Any] = [None, None]

    def status() -> None:
        notifier.status(status_text(engine))
        timers[0] = loop.call_later(STATUS_EVERY, status)

    def watchdog() -> None:
        notifier.send("WATCHDOG=1")
        timers[1] = loop.call_later(notifier.watchdog / 2, watchdog)

    status()
    if notifier.watchdog:
        watchdog()
    return timers  # the live handles: the callbacks replace them as they go


def _event_loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
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


def _drop_privileges(cfg: Config, checked: Preflight | None = None) -> None:
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


def _check_files(cfg: Config) -> None:
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
    baits = make_baits(cfg.tarpits, _where(cfg.path))
    try:
        return baits, _event_loop_factory(cfg.loop)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.path}: {exc}") from None


def serve(path: str | None) -> int:
    if path is None:
        path = system_config()
    notifier = Notifier()
    try:
        activation = Activation(listen_fds())
    except ActivationError as exc:
        fail(f"socket activation: {exc}")
    try:
        cfg = load(path)
        activation.assign(cfg.tarpits)
        where = _where(cfg.path)
        baits, factory = prepare(cfg)
        if cfg.workers > 1:
            from .workers import serve_workers

            return serve_workers(cfg, path, activation, notifier, baits, factory)
        bound = bind_all(cfg.tarpits, where, activation.bind, activation.discard)
    except ConfigError as exc:
        fail(str(exc))
    for inh in activation.unused():
        print(
            f"tarry: passed socket {inh.address} ({inh.name}) matches no [[tarpit]] name or "
            "listen address; kept unused for a reload",
            file=sys.stderr,
            flush=True,
        )
    from .observe import ObserveError, build, preflight

    try:
        checked = preflight(cfg.sections)  # as check-config does, and before the switch
    except ObserveError as exc:
        fail(f"{cfg.path}: {exc}")
    _drop_privileges(cfg, checked)
    try:
        sinks, start_admin = build(cfg.sections, stdout=sys.stdout, checked=checked)
    except ObserveError as exc:
        fail(f"{cfg.path}: {exc}")
    for module in registry().values():  # e.g. the SSH adaptive mode's patience store
        sinks += module.sinks()
    bus = Bus(sinks)
    current: list[Config] = [cfg]

    async def main() -> None:
        engine = Engine(bus, write_timeout=cfg.write_timeout, loop=asyncio.get_running_loop())
        engine.set_max_clients(cfg.max_clients)
        engine.discard_socket = activation.discard
        for spec, bait, socks in zip(cfg.tarpits, baits, bound, strict=True):
            engine.add_tarpit(spec, bait, socks)
        # which file runs, said once it runs: an error stays one line
        shown = path or f"the embedded defaults (no -c, no {SYSTEM_CONFIG})"
        print(f"tarry: config {shown}", file=sys.stderr, flush=True)
        announce(engine)
        admin = await _start_admin(engine, start_admin, explicit="admin" in cfg.sections)
        print(stores_line(cfg, admin), flush=True)

        def reload() -> None:
            if path is None:
                engine.log("SIGHUP: running the embedded defaults; nothing to re-read")
                return
            notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")
            try:
                _reload(engine, path, activation)
            finally:
                notifier.send("READY=1", f"STATUS={status_text(engine)}")

        def _reload(engine: Engine, path: str, activation: Activation) -> None:
            try:
                new = load(path)
                activation.assign(new.tarpits)
                new_baits = make_baits(new.tarpits, _where(new.path))
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
            from .changes import changes

            said = changes(current[0], new)
            current[0] = new
            engine.log(f"reloaded {path}: {len(said) or 'no'} change(s)")
            for line in said:
                engine.log(f"reload: {line}")
            announce(engine)

        try:
            await _serve(engine, bus, reload, notifier)
        finally:
            if admin is not None:
                await admin.close()

    if factory is None:
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    return 0


async def _start_admin(
    engine: Any,
    start: Callable[..., Any] | None,
    explicit: bool,
    live: Callable[[], dict[tuple[str, str], tuple[int, float, int]]] | None = None,
) -> Any:
    """The admin listener; a default one that cannot bind is a warning, a configured one fatal.
    ``engine`` is an Engine, or anything with its ``snapshot`` and ``held_by_protocol``
    (the workers' supervisor) and then ``live``."""
    if start is None:
        return None
    from .admin import AdminError

    try:
        admin = await start(
            engine.snapshot,
            engine.held_by_protocol,
            live or engine.live_totals,
            getattr(engine, "refused_by_reason", None),
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


def stores_line(cfg: Config, admin: Any) -> str:
    """The one line that says where the history goes and where the dashboard is."""
    from .observe import history_where

    url = admin.url if admin is not None else "off"
    return f"{stamp(time.time())} OBSERVE history={history_where(cfg.sections)} admin={url}"


def announce(engine: Engine) -> None:
    for listener in engine.listeners:
        if listener is not None and listener.sock is not None:
            spec = listener.tarpit.spec
            line = listen_line(
                spec.protocol, listener.address, spec.delay, spec.max_clients, spec.mode
            )
            print(line, flush=True)


def check_config(path: str, bind: bool = True) -> int:
    """What serve checks before it holds anyone, in the same functions: the
    file, the baits, every listen address (bound, then released), and the
    observability sections, the admin address and the geo database included."""
    from .observe import ObserveError, preflight

    try:
        cfg = load(path)
        prepare(cfg)
        for socks in bind_all(cfg.tarpits, _where(cfg.path)) if bind else []:
            for _, sock in socks:
                sock.close()
        preflight(cfg.sections, bind=bind)
        _check_files(cfg)
    except ConfigError as exc:
        fail(str(exc))
    except ObserveError as exc:
        fail(f"{cfg.path}: {exc}")
    print(f"{path}: OK, {len(cfg.tarpits)} tarpit(s)")
    return 0


# ---- tarry ssh: endlessh 1.1, flag for flag -----------------------------------

ENDLESSH_USAGE = """\
Usage: tarry ssh [-vhs] [-46] [-d MS] [-f CONFIG] [-l LEN] [-m LIMIT] [-p PORT]
  -4        Bind to IPv4 only
  -6        Bind to IPv6 only
  -d INT    Message millisecond delay [10000]
  -f        Set and load config file [/etc/endlessh/config]
  -h        Print this help message and exit
  -l INT    Maximum banner line length (3-255) [32]
  -m INT    Maximum number of clients [4096]
  -p INT    Listening port [2222]
  -s        Print diagnostics to syslog instead of standard output
  -v        Print diagnostics to standard output (repeatable)
  -V        Print version information and exit
"""


def ssh_main(argv: list[str]) -> int:
    """``tarry ssh``: endlessh's flags, config file, log lines and signals."""
    cfg = EndlesshConfig()
    warnings: list[str] = []

    def warn(msg: str) -> None:
        print(f"tarry: {msg}", file=sys.stderr)

    if "--help" in argv:
        from .manual import SSH_EXTRA

        sys.stdout.write(ENDLESSH_USAGE + SSH_EXTRA)
        return 0
    config_file = ENDLESSH_CONFIG
    use_syslog = False
    ident = "endlessh"
    verbosity = 0
    try:
        load_endlessh(cfg, config_file, hard=True, warn=warn)
        opts, rest = getopt.getopt(argv, "46d:f:hl:m:p:svV", ["syslog-ident="])
        for flag, value in opts:
            if flag == "-4":
                cfg.bind_family = 4
            elif flag == "-6":
                cfg.bind_family = 6
            elif flag == "-d":
                endlessh_set(cfg, "Delay", value, warn, hard=True)
            elif flag == "-f":
                config_file = value
                load_endlessh(cfg, value, hard=True, warn=warn, must_exist=True)
            elif flag == "-h":
                sys.stdout.write(ENDLESSH_USAGE)
                return 0
            elif flag == "-l":
                endlessh_set(cfg, "MaxLineLength", value, warn, hard=True)
            elif flag == "-m":
                endlessh_set(cfg, "MaxClients", value, warn, hard=True)
            elif flag == "-p":
                endlessh_set(cfg, "Port", value, warn, hard=True)
            elif flag == "-s":
                use_syslog = True
            elif flag == "--syslog-ident":
                from .sinks import syslog_ident

                try:
                    ident = syslog_ident(value)
                except ValueError as exc:
                    fail(f"--syslog-ident: {exc}")
            elif flag == "-v":
                verbosity += 1
            elif flag == "-V":
                print(f"tarry {__version__} (Endlessh 1.1 compatible)")
                return 0
    except getopt.GetoptError as exc:
        fail(f"{exc.msg} (see tarry ssh -h)")
    except EndlesshError as exc:
        fail(str(exc))
    if rest:
        fail("too many arguments")
    del warnings
    level = max(cfg.log_level, min(verbosity, 2)) if verbosity else cfg.log_level

    sinks: list[Sink] = []
    syslog = None
    if level >= 1:
        from .sinks import LineSink, SyslogSink

        sink: LineSink | SyslogSink
        if use_syslog:
            address = os.environ.get("TARRY_SYSLOG_ADDRESS", "/dev/log")  # tests: own rsyslogd
            sink = syslog = SyslogSink(address, fmt="endlessh-plain", ident=ident)
        else:
            sink = LineSink(sys.stdout, "endlessh-plain")
        sink.start()
        sinks.append(sink)
    bus = Bus(sinks)

    def info(msg: str) -> None:
        if level >= 1:
            if syslog is not None:
                syslog.say(msg)
            else:
                print(f"{stamp(time.time())} {msg}", flush=True)

    def log_config() -> None:
        info(f"Port {cfg.port}")
        info(f"Delay {cfg.delay}")
        info(f"MaxLineLength {cfg.max_line_length}")
        info(f"MaxClients {cfg.max_clients}")
        family = {6: "IPv6 Only", 4: "IPv4 Only"}.get(cfg.bind_family, "IPv4 Mapped IPv6")
        info(f"BindFamily {family}")

    log_config()
    spec = cfg.spec()
    spec.name = "endlessh"
    try:
        bait = registry()["ssh"].make(spec)
        sock = bind_listener(spec.listen[0])
    except (BindError, ConfigError) as exc:
        fail(str(exc))

    async def main() -> None:
        engine = Engine(bus, loop=asyncio.get_running_loop())
        engine.log = warn
        engine.add_tarpit(spec, bait, [(spec.listen[0], sock)])

        def reload() -> None:
            load_endlessh(cfg, config_file, hard=False, warn=warn)
            log_config()
            new = cfg.spec()
            new.name = "endlessh"
            try:
                new_bait = registry()["ssh"].make(new)
                engine.apply([(new, new_bait)], bind_listener, release_removed=False)
            except (BindError, ConfigError) as exc:
                warn(f"reload: {exc}")

        await _serve(engine, bus, reload)

    asyncio.run(main())
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see tarry --help)", 2)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "ssh":
        return ssh_main(argv[1:])
    if argv and argv[0] == "top":
        from .top import top_main

        return top_main(argv[1:])
    if argv and argv[0] == "report":
        from .report import report_main

        return report_main(argv[1:])
    from . import manual

    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="tarry",
        description="A multi-protocol network tarpit: SSH, HTTP and SMTP.\n\n" + manual.TARRY,
        epilog=manual.TARRY_EPILOG,
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"tarry {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_serve = sub.add_parser(
        "serve",
        help="run every configured tarpit",
        description=manual.SERVE,
        epilog=manual.SERVE_EPILOG,
        formatter_class=raw,
    )
    p_serve.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"the tarry.toml to run (default: {SYSTEM_CONFIG} if it exists, else the embedded defaults)",
    )
    sub.add_parser(
        "ssh",
        help="endlessh drop-in (same flags: tarry ssh -h)",
        add_help=False,
    )
    sub.add_parser("report", help="summarise the history store (tarry report -h)", add_help=False)
    sub.add_parser("top", help="a live view of a running tarry (tarry top -h)", add_help=False)
    sub.add_parser(
        "default-config",
        help="print the embedded default config",
        description=manual.DEFAULT,
        epilog=manual.DEFAULT_EPILOG,
        formatter_class=raw,
    )
    p_check = sub.add_parser(
        "check-config",
        help="check a config file and exit",
        description=manual.CHECK,
        epilog=manual.CHECK_EPILOG,
        formatter_class=raw,
    )
    p_check.add_argument("file", metavar="FILE", help="the tarry.toml to check")
    p_check.add_argument(
        "--no-bind",
        action="store_true",
        help="do not try the listen addresses (they are in use by a running tarry, or systemd)",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.config)
    if args.command == "default-config":
        from .fullconfig import text

        sys.stdout.write(text())
        return 0
    if args.command == "check-config":
        return check_config(args.file, bind=not args.no_bind)
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
