"""The ``tarry`` command: ``serve``, the endlessh drop-in ``ssh``, and config tools.

Every mistake in what the user typed or wrote becomes one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getopt
import os
import sys
import time
from typing import NoReturn

from . import __version__
from .baits import registry
from .config import (
    ENDLESSH_CONFIG,
    SYSTEM_CONFIG,
    ConfigError,
    EndlesshConfig,
    EndlesshError,
    endlessh_set,
    load,
    load_endlessh,
    system_config,
)
from .engine import Engine
from .events import Bus, Sink, stamp
from .net import BindError, bind_listener
from .runtime import (
    EngineHost,
    bind_all,
    check_files,
    fail,
    prepare,
    run,
    serve_one,
    where_in,
)
from .systemd import Activation, ActivationError, Notifier, listen_fds


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
        baits, factory = prepare(cfg)
    except ConfigError as exc:
        fail(str(exc))
    if cfg.workers > 1:
        from .workers import serve_workers

        return serve_workers(cfg, path, activation, notifier, baits, factory)
    return serve_one(cfg, path, activation, notifier, baits, factory)


def check_config(path: str, bind: bool = True) -> int:
    """What serve checks before it holds anyone, in the same functions: the
    file, the baits, every listen address (bound, then released), and the
    observability sections, the admin address and the geo database included."""
    from .observe import ObserveError, preflight

    try:
        cfg = load(path)
        prepare(cfg)
        for socks in bind_all(cfg.tarpits, where_in(cfg.path)) if bind else []:
            for _, sock in socks:
                sock.close()
        preflight(cfg.sections, bind=bind)
        check_files(cfg)
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

        def reread() -> None:
            load_endlessh(cfg, config_file, hard=False, warn=warn)
            log_config()
            new = cfg.spec()
            new.name = "endlessh"
            try:
                new_bait = registry()["ssh"].make(new)
                engine.apply([(new, new_bait)], bind_listener, release_removed=False)
            except (BindError, ConfigError) as exc:
                warn(f"reload: {exc}")

        await run(EngineHost(engine, reread), bus)

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
