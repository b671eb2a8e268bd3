"""The Redis bait: an exposed Redis 7.2 whose every RESP reply drips.

Bots that find an open Redis ask for ``INFO`` and ``CONFIG GET`` before they
write a cron job or an SSH key; brute-forcers send ``AUTH``. Every reply here
is what Redis 7.2 would say, and it drips a byte a tick after its head (the
RESP type and error code, or a bulk's length line), so ``INFO`` (about 2 KB)
takes hours at the default delay. A client's per-read timeout is what ends a
drip early; the known ones (docs/databases.md) are all longer than the default
delay, so every byte resets them.

Records each command name (``command``, the last one), ``AUTH`` attempts
(``auth_user``, and ``auth_pass`` with ``record_credentials``), and the client
library a driver names with ``CLIENT SETINFO`` (``client``).

State: ``tarry.baits._drip``; phase 0 only (waiting or replying). A client
costs an object only for a reply that echoes it or for input in pieces.
"""

from __future__ import annotations

import fnmatch

from ..bait import BaitModule, Notes, Option, Step, TarpitSpec, sanitise
from ._drip import F_CLOSE, INPUT_MAX, Conn, DripBait, flag, keep

PROTOCOL = "redis"
DEFAULTS = {"delay": 2.0}  # redis-py 5.3+ waits 5 s per read by default
DEFAULT_LISTEN = ("*:6379",)
ARGS_MAX = 64  # arguments of one command; more is a protocol error here
NAME_MAX = 40  # longest command name noted
F_NOTED = flag(0)  # a CLIENT SETINFO LIB-NAME was noted

OPTIONS = {
    "version": Option("7.2.4", str, "redis_version that INFO and HELLO report"),
    "requirepass": Option(
        False, bool, "answer every command but AUTH with NOAUTH (a password-protected Redis)"
    ),
    "record_credentials": Option(True, bool, "log the AUTH passwords tried (auth_pass)"),
}

R_PONG = b"+PONG\r\n"
R_OK = b"+OK\r\n"
R_NIL = b"$-1\r\n"
R_EMPTY = b"*0\r\n"
R_ZERO = b":0\r\n"
R_SCAN = b"*2\r\n$1\r\n0\r\n*0\r\n"
R_NOAUTH = b"-NOAUTH Authentication required.\r\n"
R_WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
R_NOPASS = (
    b"-ERR AUTH <password> called without any password configured for the default user."
    b" Are you sure your configuration is correct?\r\n"
)
R_BULK_LEN = b"-ERR Protocol error: invalid bulk length\r\n"
R_MULTI_LEN = b"-ERR Protocol error: invalid multibulk length\r\n"
R_TOO_BIG = b"-ERR Protocol error: too big inline request\r\n"
R_NOPROTO = b"-NOPROTO unsupported protocol version\r\n"

CONFIG = {
    "dir": "/var/lib/redis",
    "dbfilename": "dump.rdb",
    "bind": "* -::*",
    "port": "6379",
    "protected-mode": "no",
    "requirepass": "",
    "masterauth": "",
    "maxmemory": "0",
    "maxmemory-policy": "noeviction",
    "save": "3600 1 300 100 60 10000",
    "appendonly": "no",
    "appendfilename": "appendonly.aof",
    "daemonize": "yes",
    "databases": "16",
    "logfile": "/var/log/redis/redis-server.log",
    "pidfile": "/run/redis/redis-server.pid",
    "timeout": "0",
    "tcp-keepalive": "300",
    "loglevel": "notice",
    "slave-read-only": "yes",
    "replica-read-only": "yes",
    "enable-module-command": "no",
    "enable-debug-command": "no",
}


class ProtocolError(Exception):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply


def bulk(text: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(text), text)


def array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def hello(version: bytes, proto: int) -> bytes:
    """HELLO's reply: a RESP3 map, or its RESP2 array."""
    pairs = [(b"server", bulk(b"redis")), (b"version", bulk(version)), (b"proto", b":%d\r\n" % proto),
             (b"id", b":%d\r\n" % 1893), (b"mode", bulk(b"standalone")), (b"role", bulk(b"master")),
             (b"modules", b"*0\r\n")]  # fmt: skip
    start = b"%%%d\r\n" % len(pairs) if proto == 3 else b"*%d\r\n" % (2 * len(pairs))
    return start + b"".join(bulk(k) + v for k, v in pairs)


def _number(raw: bytes, error: bytes) -> int:
    if not raw.lstrip(b"-").isdigit() or len(raw) > 11:
        raise ProtocolError(error)
    return int(raw)


def parse(buf: bytes) -> tuple[list[bytes] | None, int]:
    """One command from the start of ``buf``: (arguments, bytes used), or
    (None, 0) while it is incomplete. ProtocolError carries Redis's reply."""
    if not buf.startswith(b"*"):
        end = buf.find(b"\n")
        if end < 0:
            return None, 0
        return buf[:end].strip(b"\r").split(), end + 1
    end = buf.find(b"\r\n")
    if end < 0:
        return None, 0
    n = _number(buf[1:end], R_MULTI_LEN)
    if n > ARGS_MAX:
        raise ProtocolError(R_MULTI_LEN)
    pos, args = end + 2, []
    for _ in range(max(0, n)):
        if pos >= len(buf):
            return None, 0
        if buf[pos : pos + 1] != b"$":
            got = sanitise(buf[pos : pos + 1]).encode()
            raise ProtocolError(b"-ERR Protocol error: expected '$', got '%s'\r\n" % got)
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None, 0
        size = _number(buf[pos + 1 : end], R_BULK_LEN)
        if not 0 <= size <= INPUT_MAX:  # it could never be complete within the bound
            raise ProtocolError(R_BULK_LEN)
        if len(buf) < end + 2 + size + 2:
            return None, 0
        args.append(buf[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return args, pos


def _info(version: str) -> bytes:
    """INFO as a Debian-packaged Redis answers it, one short section per heading."""
    sections = {
        "Server": [
            f"redis_version:{version}",
            "redis_git_sha1:00000000",
            "redis_git_dirty:0",
            "redis_build_id:5f2b8a6e1ad0cbb3",
            "redis_mode:standalone",
            "os:Linux 5.15.0-91-generic x86_64",
            "arch_bits:64",
            "monotonic_clock:POSIX clock_gettime",
            "multiplexing_api:epoll",
            "atomicvar_api:c11-builtin",
            "gcc_version:12.2.0",
            "process_id:812",
            "process_supervised:systemd",
            "run_id:7c1d5e0f3b9a4d26a8e1f0c2b7d3e5a9c4f6b8d0",
            "tcp_port:6379",
            "server_time_usec:1733400000000000",
            "uptime_in_seconds:3888011",
            "uptime_in_days:45",
            "hz:10",
            "configured_hz:10",
            "lru_clock:9012345",
            "executable:/usr/bin/redis-server",
            "config_file:/etc/redis/redis.conf",
            "io_threads_active:0",
        ],
        "Clients": [
            "connected_clients:3",
            "cluster_connections:0",
            "maxclients:10000",
            "client_recent_max_input_buffer:20480",
            "client_recent_max_output_buffer:0",
            "blocked_clients:0",
            "tracking_clients:0",
            "clients_in_timeout_table:0",
        ],
        "Memory": [
            "used_memory:1184232",
            "used_memory_human:1.13M",
            "used_memory_rss:8523776",
            "used_memory_rss_human:8.13M",
            "used_memory_peak:1302288",
            "used_memory_peak_human:1.24M",
            "total_system_memory:4110036992",
            "total_system_memory_human:3.83G",
            "maxmemory:0",
            "maxmemory_human:0B",
            "maxmemory_policy:noeviction",
            "mem_fragmentation_ratio:7.28",
            "mem_allocator:jemalloc-5.3.0",
        ],
        "Persistence": [
            "loading:0",
            "rdb_changes_since_last_save:4",
            "rdb_bgsave_in_progress:0",
            "rdb_last_save_time:1733396400",
            "rdb_last_bgsave_status:ok",
            "aof_enabled:0",
            "aof_rewrite_in_progress:0",
        ],
        "Stats": [
            "total_connections_received:1893",
            "total_commands_processed:48210",
            "instantaneous_ops_per_sec:0",
            "total_net_input_bytes:1620455",
            "total_net_output_bytes:30918422",
            "rejected_connections:0",
            "expired_keys:211",
            "evicted_keys:0",
            "keyspace_hits:20316",
            "keyspace_misses:1822",
            "pubsub_channels:0",
        ],
        "Replication": [
            "role:master",
            "connected_slaves:0",
            "master_failover_state:no-failover",
            "master_replid:2d9a1b4c7e0f3a5d8c6b9e1f2a4d7c0b3e5f8a1d",
            "master_repl_offset:0",
        ],
        "CPU": [
            "used_cpu_sys:2890.112412",
            "used_cpu_user:3321.806519",
        ],
        "Modules": [],
        "Errorstats": ["errorstat_ERR:count=14"],
        "Cluster": ["cluster_enabled:0"],
        "Keyspace": ["db0:keys=17,expires=2,avg_ttl=0"],
    }
    text = "\r\n".join("\r\n".join([f"# {name}", *lines, ""]) for name, lines in sections.items())
    return bulk(text.encode())


class RedisBait(DripBait):
    """One per listener: every static reply is built once and shared."""

    protocol = PROTOCOL

    def __init__(self, spec: TarpitSpec) -> None:
        super().__init__(spec)
        version = str(spec.opt("version")).encode()
        self.requirepass = bool(spec.opt("requirepass"))
        self.r = {
            r: self.static(r)
            for r in (
                R_PONG, R_OK, R_NIL, R_EMPTY, R_ZERO, R_SCAN, R_NOAUTH, R_WRONGPASS,
                R_NOPASS, R_BULK_LEN, R_MULTI_LEN, R_TOO_BIG,
            )
        }  # fmt: skip
        self.info = self.static(_info(version.decode()))
        self.hello2 = self.static(hello(version, 2))
        self.hello3 = self.static(hello(version, 3))
        self.noproto = self.static(R_NOPROTO)
        self.verbs = {
            b"PING": R_PONG,
            b"QUIT": R_OK,
            b"SELECT": R_OK,
            b"SET": R_OK,
            b"FLUSHALL": R_OK,
            b"FLUSHDB": R_OK,
            b"SAVE": R_OK,
            b"SLAVEOF": R_OK,
            b"REPLICAOF": R_OK,
            b"GET": R_NIL,
            b"KEYS": R_EMPTY,
            b"COMMAND": R_EMPTY,
            b"DBSIZE": R_ZERO,
            b"DEL": R_ZERO,
            b"EXISTS": R_ZERO,
            b"SCAN": R_SCAN,
        }

    def open(self, peer: str) -> Step:
        return Step(0)  # Redis waits for the client to speak

    def head(self, reply: bytes) -> int:
        """A bulk, array or map goes with its length line; a status or error with its code."""
        line = reply.find(b"\r\n")
        if reply[:1] in (b"$", b"*", b"%"):
            return line + 2
        space = reply.find(b" ", 0, line)
        return space if space > 0 else line

    def overflow(self, state: int) -> Step:
        """More input than INPUT_MAX and no command in it: Redis's error, then close."""
        c = Conn()
        return self.say(state | F_CLOSE, c, self.r[R_TOO_BIG])

    def take(self, state: int, c: Conn, data: bytes, age: float) -> Step:
        if not keep(c, data):
            return self.overflow(state)
        try:
            args, used = parse(c.buf)
        except ProtocolError as e:
            c.buf = b""
            return self.say(state | F_CLOSE, c, e.reply)
        if args is None:
            return Step(state, b"", None, c)
        c.buf = c.buf[used:]
        if not args:  # an empty line: Redis says nothing
            return self.after(state, c, b"", age)
        reply, notes, state = self.command(state, args)
        return self.say(state, c, reply, notes)

    def command(self, state: int, args: list[bytes]) -> tuple[int | bytes, Notes, int]:
        """Redis's reply to one command, what it tells, and the new state."""
        verb = args[0].upper()
        name = verb
        if verb in (b"CONFIG", b"CLIENT", b"ACL", b"MODULE", b"CLUSTER") and len(args) > 1:
            name = verb + b" " + args[1].upper()
        notes: Notes = (("command", sanitise(name, NAME_MAX)),)
        if verb == b"AUTH":
            return self.auth(args, notes, state)
        if verb == b"QUIT":
            return self.r[R_OK], notes, state | F_CLOSE
        if verb == b"HELLO":
            return self.handshake(args, notes, state)
        if self.requirepass:
            return self.r[R_NOAUTH], notes, state
        if verb == b"INFO":
            return self.info, notes, state
        if name == b"CONFIG GET" and len(args) > 2:
            return config_get(args[2:]), notes, state
        if name in (b"CONFIG SET", b"CONFIG RESETSTAT", b"CLIENT SETNAME"):
            return self.r[R_OK], notes, state
        if name == b"CLIENT SETINFO" and len(args) > 3:
            if args[2].upper() == b"LIB-NAME" and not state & F_NOTED:
                notes += (("client", sanitise(args[3], NAME_MAX)),)
                state |= F_NOTED
            return self.r[R_OK], notes, state
        static = self.verbs.get(verb)
        if static is not None:
            return self.r[static], notes, state
        return unknown(args), notes, state

    def handshake(self, args: list[bytes], notes: Notes, state: int) -> tuple[int, Notes, int]:
        """HELLO [protover [AUTH user pass]]: RESP3 is agreed to (its parsers
        read RESP2's replies too), and an AUTH in it is refused as AUTH is."""
        if len(args) >= 5 and args[2].upper() == b"AUTH":
            return self.auth([b"AUTH", *args[3:5]], notes, state)
        if self.requirepass:
            return self.r[R_NOAUTH], notes, state
        if len(args) == 1 or args[1] == b"2":
            return self.hello2, notes, state
        return (self.hello3 if args[1] == b"3" else self.noproto), notes, state

    def auth(self, args: list[bytes], notes: Notes, state: int) -> tuple[int, Notes, int]:
        if len(args) not in (2, 3):
            return self.r[R_NOPASS if not self.requirepass else R_WRONGPASS], notes, state
        user = args[1] if len(args) == 3 else b"default"
        notes += (("auth_user", sanitise(user)),)
        if self.record:
            notes += (("auth_pass", sanitise(args[-1])),)
        if self.requirepass or len(args) == 3:
            return self.r[R_WRONGPASS], notes, state
        return self.r[R_NOPASS], notes, state


def config_get(patterns: list[bytes]) -> bytes:
    """CONFIG GET: every known parameter that a (bounded) glob matches."""
    items: list[bytes] = []
    for raw in patterns[:8]:
        pattern = raw[:64].decode("latin-1").lower()
        for key, value in CONFIG.items():
            if fnmatch.fnmatchcase(key, pattern) and key.encode() not in items[::2]:
                items += [key.encode(), value.encode()]
    return array(items)


def unknown(args: list[bytes]) -> bytes:
    """Redis's reply to a command it does not know; it quotes a bounded part."""
    quoted = " ".join(f"'{sanitise(a, 32)}'" for a in args[1:4])
    return (
        f"-ERR unknown command '{sanitise(args[0], NAME_MAX)}', "
        f"with args beginning with: {quoted}\r\n"
    ).encode()


def make(spec: TarpitSpec) -> RedisBait:
    return RedisBait(spec)


BAIT = BaitModule(PROTOCOL, make, OPTIONS, DEFAULTS, default_listen=DEFAULT_LISTEN)
