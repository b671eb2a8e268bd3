"""Configuration: tarry's TOML file, and endlessh's own config format.

Every mistake becomes one ``ConfigError`` whose text names the file, the key
and what is wrong, so the CLI can print one line and never a traceback.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .bait import MAX_COUNT, MAX_SECONDS, Bounds, Option, TarpitSpec, shown
from .baits import registry
from .net import parse_address

DEFAULT_CONFIG = """\
# tarry configuration. Print this with `tarry default-config`.
# One [[tarpit]] table per tarpit; run with `tarry serve -c FILE`.
# A listen address "*:PORT" means every address (IPv6 dual-stack where the
# host has IPv6, else IPv4); "[::]:PORT" is IPv6 only; "0.0.0.0:PORT" IPv4 only.

[engine]
write_timeout = 300.0      # give up on a client whose writes block this long (s)
loop = "auto"              # "asyncio", "uvloop" (tarry[fast]), or "auto": uvloop if installed
workers = 1                # engine processes; "auto" = one per core (docs/workers.md)

[log]
level = "info"             # "none", "info" (ACCEPT/CLOSE/TOTALS) or "debug"

[limits]
max_clients = 0            # clients held across every tarpit (0 = only each tarpit's own cap)

[privileges]               # only when started as root: bind, then run as this user
user = "nobody"
group = "nogroup"
allow_root = false         # true lets tarry keep running as root (not advised)

[[tarpit]]
protocol = "ssh"           # endlessh: endless lines before the SSH version string
listen = ["*:2222"]
delay = 10.0               # seconds between lines
max_clients = 4096
line_length = 32           # longest line, CRLF included (3..255)
jitter = 0.0               # spread each delay by +/- this fraction (0 = off)
mode = "adaptive"          # per client: "auth" for clients that come to log in (a real
                           # key exchange, every password refused late), "kex" for other
                           # clients, endless lines for scanners that wait in silence; or
                           # "banner" (endlessh, and the default when mode is left out),
                           # "drip", "kex", "auth": docs/ssh-modes.md
# max_auth_clients = 256   # auth: most clients past the key exchange at once (~4.5 KB each)
# record_credentials = true  # auth: log the passwords tried, not only the user names

[[tarpit]]
protocol = "http"          # a response that never ends (docs/http.md)
listen = ["*:8080"]
delay = 5.0                # seconds between header lines or body chunks
max_clients = 4096
strategy = "auto"          # "headers", "body", "continue", or "auto" (per client)
server = "nginx"           # whose response head to imitate: nginx, apache, iis
request_timeout = 10.0     # seconds to wait for the request; then the drip starts anyway
# tls = true               # HTTPS (e.g. listen = ["*:443"]): a generated certificate, or cert/key

[[tarpit]]
protocol = "smtp"          # a mail server that stutters every reply (docs/smtp.md)
listen = ["*:2525"]
delay = 5.0                # seconds per greeting line, or per stuttered byte of a reply
max_clients = 4096
hostname = "mail.example.com"
greeting_lines = -1        # endless "220-" lines, a whole line a delay (the endlessh idea);
                           # a client whose address taught its reply deadline gets the
                           # greeting and every reply just inside it (docs/smtp.md)
starttls = true            # offer STARTTLS (a self-signed certificate is made on first start)
# For implicit TLS add a table with listen = ["*:465"] and tls = true.

# Databases (docs/databases.md), each one table away: uncomment to enable.
# [[tarpit]]
# protocol = "redis"         # an open Redis 7.2 whose replies drip (INFO: hours)
# listen = ["*:6379"]
# delay = 2.0                # seconds per byte; under redis-py's 5 s read timeout
# requirepass = false        # true: every command but AUTH is answered NOAUTH
# record_credentials = true  # log the AUTH passwords tried
#
# [[tarpit]]
# protocol = "mysql"         # MySQL 8.0: the greeting drips, every login is denied late
# listen = ["*:3306"]
# delay = 5.0                # seconds per byte of each packet, after its header
# record_credentials = true  # ask for the password in clear (mysql_clear_password), log it
#
# [[tarpit]]
# protocol = "postgresql"    # asks for a password, and refuses it a byte a delay
# listen = ["*:5432"]
# delay = 10.0
# auth = "password"          # "password" (logged in clear), "md5" or "scram-sha-256"
# record_credentials = true  # log the passwords tried
"""

SECONDS = Bounds(0, MAX_SECONDS, above=True, unit=" seconds")

COMMON: dict[str, Option] = {
    "protocol": Option("", str, "which bait: " + "ssh, http, smtp"),
    "listen": Option([], list, "host:port strings"),
    "delay": Option(10.0, (int, float), "seconds between sends", bounds=SECONDS),
    "max_clients": Option(4096, int, "clients held at once", bounds=Bounds(1, MAX_COUNT)),
    "jitter": Option(0.0, (int, float), "+/- fraction", bounds=Bounds(0, 1, below=True)),
    "name": Option("", str, "a name for this tarpit, kept across reloads"),
    # per-IP caps and PROXY protocol: docs/deploy.md
    "max_clients_per_ip": Option(
        64,
        int,
        "clients held at once from one IPv4 address or IPv6 /64 (0 = no cap)",
        bounds=Bounds(0, 65535),
    ),
    "per_ip_action": Option(
        "close",
        str,
        'past max_clients_per_ip: "close" at once, or "backlog" (wait unread)',
        lambda v: None if v in ("close", "backlog") else 'must be "close" or "backlog"',
    ),
    "proxy_protocol": Option(False, bool, "expect a PROXY v1/v2 header on each connection"),
    "proxy_timeout": Option(
        5.0,
        (int, float),
        "seconds to wait for the PROXY header",
        bounds=Bounds(0, 3600, above=True, unit=" seconds"),
    ),
}

LOG_LEVELS = {"none": 0, "info": 1, "debug": 2}


class ConfigError(Exception):
    """One line that says which file, which key, and what is wrong."""


@dataclass
class Config:
    tarpits: list[TarpitSpec]
    write_timeout: float = 300.0
    log_level: int = 1
    path: str = "<embedded defaults>"
    sections: dict[str, Any] = field(default_factory=dict)
    # deployment (docs/deploy.md)
    loop: str = "auto"
    workers: int = 1  # engine processes; "auto" is resolved to the cores we may run on
    max_clients: int = 0
    user: str = "nobody"
    group: str = "nogroup"
    allow_root: bool = False


def _kind_name(kind: type | tuple[type, ...], bounds: Bounds | None = None) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
    }
    words = [
        names.get(k, k.__name__) + (f" {bounds.text()}" if bounds and k in (int, float) else "")
        for k in kinds
        if not (k is int and float in kinds)
    ]
    return " or ".join(words)


def check_value(where: str, key: str, value: Any, option: Option) -> Any:
    """``value`` if ``option`` takes it; else ConfigError naming the key and what it takes."""
    kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        raise ConfigError(
            f"{where}{key}: must be {_kind_name(option.kind, option.bounds)}, not {shown(value)}"
        )
    problem = option.bounds.problem(value) if option.bounds is not None else None
    if problem is None and option.check is not None:
        problem = option.check(value)
    if problem:
        raise ConfigError(f"{where}{key}: {problem} (got {shown(value)})")
    return value


def parse_tarpit(table: Any, where: str) -> TarpitSpec:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    protocol = table.get("protocol")
    modules = registry()
    if protocol is None:
        raise ConfigError(f"{where}protocol: missing (one of {', '.join(sorted(modules))})")
    if not isinstance(protocol, str) or protocol not in modules:
        raise ConfigError(
            f"{where}protocol: unknown protocol {protocol!r} (one of {', '.join(sorted(modules))})"
        )
    module = modules[protocol]
    options: Mapping[str, Option] = module.options
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in COMMON:
            values[key] = check_value(where, key, value, COMMON[key])
        elif key in options:
            values[key] = check_value(where, key, value, options[key])
        else:
            known = ", ".join(sorted([*COMMON, *options]))
            raise ConfigError(
                f"{where}{key}: unknown key for protocol {protocol!r} (known: {known})"
            )
    listen = values.get("listen") or list(module.default_listen)
    if not listen:
        raise ConfigError(f'{where}listen: missing (e.g. ["*:2222"])')
    for addr in listen:
        if not isinstance(addr, str):
            raise ConfigError(f"{where}listen: every address must be a string, not {addr!r}")
        try:
            parse_address(addr)
        except ValueError as exc:
            raise ConfigError(f"{where}listen: {addr!r}: {exc}") from None
    if len(set(listen)) != len(listen):
        raise ConfigError(f"{where}listen: an address is listed twice")
    defaults = {**{k: o.default for k, o in COMMON.items()}, **module.defaults}
    opts = {k: values.get(k, o.default) for k, o in options.items()}
    if module.check is not None:
        problem = module.check(opts)
        if problem:
            raise ConfigError(f"{where}{problem}")
    return TarpitSpec(
        protocol=protocol,
        listen=list(listen),
        delay=float(values.get("delay", defaults["delay"])),
        max_clients=int(values.get("max_clients", defaults["max_clients"])),
        jitter=float(values.get("jitter", defaults["jitter"])),
        options=opts,
        name=str(values.get("name", "")),
        max_clients_per_ip=int(values.get("max_clients_per_ip", defaults["max_clients_per_ip"])),
        per_ip_action=str(values.get("per_ip_action", defaults["per_ip_action"])),
        proxy_protocol=bool(values.get("proxy_protocol", defaults["proxy_protocol"])),
        proxy_timeout=float(values.get("proxy_timeout", defaults["proxy_timeout"])),
    )


Section = Callable[[dict[str, Any], str], None]

# ---- deployment sections: [engine] loop, [limits], [privileges] (docs/deploy.md) ----

LOOP_OPTION = Option(
    "auto",
    str,
    "event loop",
    lambda v: (
        None if v in ("auto", "asyncio", "uvloop") else 'must be "auto", "asyncio" or "uvloop"'
    ),
)


MAX_WORKERS = 1024


def _workers(v: Any) -> str | None:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_WORKERS):
        return None
    return f'must be "auto" (one per core) or a number of processes from 1 to {MAX_WORKERS}'


WORKERS_OPTION = Option(
    1, (int, str), "engine processes under one supervisor", _workers, Bounds(1, MAX_WORKERS)
)
WRITE_TIMEOUT_OPTION = Option(
    300.0, (int, float), "seconds a blocked write may take", bounds=SECONDS
)


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _name(v: str) -> str | None:
    if not v or len(v) > 64 or any(c in v for c in ":\n\0/"):
        return "must be a user or group name (or a number)"
    return None


LIMITS: dict[str, Option] = {
    "max_clients": Option(
        0,
        int,
        "clients held across every tarpit; 0 = no cap beyond each tarpit's",
        bounds=Bounds(0, MAX_COUNT),
    ),
}
PRIVILEGES: dict[str, Option] = {
    "user": Option("nobody", str, "user to run as after binding, when started as root", _name),
    "group": Option("nogroup", str, "group to run as after binding, when started as root", _name),
    "allow_root": Option(False, bool, "let tarry keep running as root"),
}


def _keys_section(table: dict[str, Any], where: str, keys: Mapping[str, Option]) -> None:
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(f"{where}{key}: unknown key (known: {', '.join(sorted(keys))})")
        check_value(where, key, value, keys[key])


def _engine_section(table: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        if key == "write_timeout":
            check_value(where, key, value, WRITE_TIMEOUT_OPTION)
        elif key == "loop":
            check_value(where, key, value, LOOP_OPTION)
        elif key == "workers":
            problem = _workers(value)  # its own words, "auto" included, for any type
            if problem:
                raise ConfigError(f"{where}{key}: {problem} (got {shown(value)})")
        else:
            raise ConfigError(f"{where}{key}: unknown key (known: loop, workers, write_timeout)")


def _log_section(table: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        if key == "level" and value not in LOG_LEVELS:
            raise ConfigError(
                f"{where}level: must be one of {', '.join(LOG_LEVELS)}, not {value!r}"
            )
    _observe_section("log")(table, where)


def _observe_section(name: str) -> Section:
    """[log], [history], [metrics], [geo] and [admin] are checked by tarry.observe."""

    def check(table: dict[str, Any], where: str) -> None:
        from .observe import validate_sections

        errors = validate_sections({name: table})
        if errors:
            raise ConfigError(f"{where}{errors[0]}")

    return check


SECTIONS: dict[str, Section] = {
    "engine": _engine_section,
    "log": _log_section,
    "limits": lambda table, where: _keys_section(table, where, LIMITS),
    "privileges": lambda table, where: _keys_section(table, where, PRIVILEGES),
    **{name: _observe_section(name) for name in ("history", "metrics", "geo", "admin")},
}


def parse(text: str, path: str = "<embedded defaults>") -> Config:
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: an integer of 4,300 digits
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    tarpits_raw = doc.get("tarpit", [])
    if not isinstance(tarpits_raw, list):
        raise ConfigError(f"{path}: tarpit: must be an array of tables, written [[tarpit]]")
    for key, value in doc.items():
        if key == "tarpit":
            continue
        if key not in SECTIONS:
            known = ", ".join(["tarpit", *SECTIONS])
            raise ConfigError(f"{path}: {key}: unknown section (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key}: must be a table, written [{key}]")
        SECTIONS[key](value, f"{path}: [{key}] ")
    if not tarpits_raw:
        raise ConfigError(f"{path}: no [[tarpit]] table: nothing to run")
    specs = []
    for i, table in enumerate(tarpits_raw, 1):
        proto = table.get("protocol", "?") if isinstance(table, dict) else "?"
        specs.append(parse_tarpit(table, f"{path}: [[tarpit]] #{i} ({proto}) "))
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs, 1):
        for addr in spec.listen:
            _, port = parse_address(addr)
            if port and addr in seen:
                raise ConfigError(
                    f"{path}: [[tarpit]] #{i} listen: {addr} is also used by [[tarpit]] #{seen[addr]}"
                )
            seen[addr] = i
    names = [s.name for s in specs if s.name]
    if len(names) != len(set(names)):
        raise ConfigError(f"{path}: two [[tarpit]] tables have the same name")
    engine = doc.get("engine", {})
    log = doc.get("log", {})
    limits = doc.get("limits", {})
    privileges = {k: o.default for k, o in PRIVILEGES.items()} | doc.get("privileges", {})
    return Config(
        tarpits=specs,
        write_timeout=float(engine.get("write_timeout", 300.0)),
        log_level=LOG_LEVELS[log.get("level", "info")],
        path=path,
        sections={k: v for k, v in doc.items() if k != "tarpit"},
        loop=engine.get("loop", LOOP_OPTION.default),
        workers=cpu_count() if engine.get("workers") == "auto" else engine.get("workers", 1),
        max_clients=int(limits.get("max_clients", LIMITS["max_clients"].default)),
        user=privileges["user"],
        group=privileges["group"],
        allow_root=privileges["allow_root"],
    )


SYSTEM_CONFIG = "/etc/tarry/tarry.toml"
"""What ``tarry serve`` runs without ``-c`` when it exists (``TARRY_CONFIG_FILE``
names another path: the tests, which must not write to /etc)."""


def system_config() -> str | None:
    """The system config file when it exists, else None (the embedded defaults)."""
    path = os.environ.get("TARRY_CONFIG_FILE") or SYSTEM_CONFIG
    return path if os.path.exists(path) else None


def load(path: str | None) -> Config:
    if path is None:
        return parse(DEFAULT_CONFIG)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse(text, path)


# ---- endlessh's config file ---------------------------------------------------

ENDLESSH_CONFIG = "/etc/endlessh/config"


@dataclass
class EndlesshConfig:
    """endlessh 1.1's settings, with its defaults."""

    port: int = 2222
    delay: int = 10000  # milliseconds
    max_line_length: int = 32
    max_clients: int = 4096
    bind_family: int = 0  # 0 both, 4 or 6
    log_level: int = 0

    def listen(self) -> str:
        host = {0: "*", 4: "0.0.0.0", 6: "[::]"}[self.bind_family]
        return f"{host}:{self.port}"

    def spec(self) -> TarpitSpec:
        options = {k: o.default for k, o in registry()["ssh"].options.items()}
        options["line_length"] = self.max_line_length
        return TarpitSpec(
            protocol="ssh",
            listen=[self.listen()],
            delay=self.delay / 1000.0,
            max_clients=self.max_clients,
            options=options,
        )


def _endlessh_int(text: str, low: int, high: int) -> int | None:
    """strtol with nothing left over, within range; None when invalid."""
    try:
        value = int(text, 10)
    except ValueError:
        return None
    if text.strip() != text or not low <= value <= high:
        return None
    return value


INT_MAX = 2**31 - 1
ENDLESSH_SETTERS: dict[str, tuple[str, str, int, int]] = {
    # flag/key -> (attribute, endlessh's word for it, low, high)
    "Port": ("port", "port", 1, 65535),
    "Delay": ("delay", "delay", 1, INT_MAX),
    "MaxLineLength": ("max_line_length", "line length", 3, 255),
    "MaxClients": ("max_clients", "max clients", 1, INT_MAX),
}


class EndlesshError(ConfigError):
    """A fatal endlessh-style error: endlessh would exit with status 1."""


def endlessh_set(
    cfg: EndlesshConfig, key: str, value: str, warn: Callable[[str], None], hard: bool
) -> None:
    attr, word, low, high = ENDLESSH_SETTERS[key]
    parsed = _endlessh_int(value, low, high)
    if parsed is None:
        message = f"Invalid {word}: {value}"
        if hard:
            raise EndlesshError(message)
        warn(message)
    else:
        setattr(cfg, attr, parsed)


def endlessh_family(
    cfg: EndlesshConfig, value: str, warn: Callable[[str], None], hard: bool
) -> None:
    family = {"4": 4, "6": 6, "0": 0}.get(value[:1])
    if family is None:
        message = f"Invalid address family: {value}"
        if hard:
            raise EndlesshError(message)
        warn(message)
    else:
        cfg.bind_family = family


def load_endlessh(
    cfg: EndlesshConfig,
    path: str,
    hard: bool,
    warn: Callable[[str], None],
    must_exist: bool = False,
) -> None:
    """Read endlessh's ``Key value`` file into ``cfg``, as endlessh does.

    ``hard`` makes a bad value fatal (start-up); on reload it only warns and the
    old value stays. A missing default file is fine. A missing or unreadable
    ``-f`` file (``must_exist``) is warned about on stderr and the defaults run,
    as in endlessh, whose config_load skips a file fopen cannot open (silently:
    tarry says so, off stdout, where the log lines stay endlessh's).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        if must_exist:
            warn(f"{path}: no such config file; running on the other settings, as endlessh does")
        return
    except OSError as exc:
        if must_exist:
            warn(f"{path}: cannot read: {exc.strerror or exc}; running on the other settings")
            return
        if hard:
            raise EndlesshError(f"{path}: cannot read: {exc.strerror or exc}") from None
        warn(f"{path}: cannot read: {exc.strerror or exc}")
        return
    for lineno, raw in enumerate(data.decode("latin-1").split("\n"), 1):
        line = raw.split("#", 1)[0]
        tokens = line.replace("\r", " ").split()
        if not tokens:
            continue
        if len(tokens) == 1 or len(tokens) > 2:
            message = (
                f"{path}:{lineno}: {'Missing value' if len(tokens) == 1 else 'Too many values'}"
            )
            if hard:
                raise EndlesshError(message)
            warn(message)
            continue
        key, value = tokens
        if key in ENDLESSH_SETTERS:
            endlessh_set(cfg, key, value, warn, hard)
        elif key == "BindFamily":
            endlessh_family(cfg, value, warn, hard)
        elif key == "LogLevel":
            level = _endlessh_int(value, 0, 2)
            if level is None:
                message = f"{path}:{lineno}: Invalid log level '{value}'"
                if hard:
                    raise EndlesshError(message)
                warn(message)
            else:
                cfg.log_level = level
        else:
            warn(f"{path}:{lineno}: Unknown option '{key}'")
