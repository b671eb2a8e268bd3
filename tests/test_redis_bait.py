"""The Redis bait as a sans-I/O machine: RESP replies, pacing, records, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baitsim import Sim, fuzz
from tarry.bait import TarpitSpec
from tarry.baits import _drip, redis, registry
from tarry.config import ConfigError, check_value


def spec(delay: float = 2.0, **opts: object) -> TarpitSpec:
    options = {k: o.default for k, o in redis.OPTIONS.items()}
    options.update(opts)
    return TarpitSpec("redis", ["127.0.0.1:0"], delay, 16, 0.0, options)


def cmd(*args: bytes) -> bytes:
    return redis.array(list(args))


def ask(sim: Sim, data: bytes) -> list[bytes]:
    sim.feed(data)
    return sim.segments()


def read_bulk(data: bytes) -> bytes:
    head, _, rest = data.partition(b"\r\n")
    assert head[:1] == b"$"
    size = int(head[1:])
    assert rest[size:] == b"\r\n"
    return rest[:size]


def test_module_shape():
    assert registry()["redis"] is redis.BAIT
    assert redis.BAIT.default_listen == ("*:6379",)
    assert redis.DEFAULTS["delay"] < 5.0  # redis-py's default per-read timeout
    assert redis.OPTIONS["record_credentials"].default is True
    for key, option in redis.OPTIONS.items():
        assert check_value("", key, option.default, option) == option.default, key
    with pytest.raises(ConfigError, match="requirepass"):
        check_value("", "requirepass", "yes", redis.OPTIONS["requirepass"])


def test_silent_until_asked():
    sim = Sim(redis.make(spec()))
    assert sim.state == 0 and sim.due is None and sim.obj is None


def test_ping_code_whole_then_dripped():
    sim = Sim(redis.make(spec()))
    parts = ask(sim, cmd(b"PING"))
    assert parts[0] == b"+PONG"  # the reply code is never split
    assert b"".join(parts) == b"+PONG\r\n"
    assert all(len(p) == 1 for p in parts[1:])
    assert sim.now == pytest.approx(2.0 * len(parts))
    assert sim.notes["command"] == "PING"


def test_info_is_believable_and_takes_hours():
    sim = Sim(redis.make(spec()))
    parts = ask(sim, b"INFO\r\n")  # an inline command, as nc users type it
    assert parts[0].startswith(b"$") and parts[0].endswith(b"\r\n") and parts[0].count(b"\r\n") == 1
    text = read_bulk(b"".join(parts)).decode()
    assert text.startswith("# Server\r\nredis_version:7.2.4\r\n")
    fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
    assert fields["role"] == "master" and fields["tcp_port"] == "6379"
    assert sim.now >= 600  # a client without a deadline is held 10 minutes and more
    assert sim.obj is None  # a static reply drips from the state word alone


def test_auth_recorded_and_refused():
    sim = Sim(redis.make(spec()))
    reply = b"".join(ask(sim, cmd(b"AUTH", b"hunter2")))
    assert reply.startswith(b"-ERR AUTH <password> called without any password configured")
    assert sim.notes["auth_user"] == "default" and sim.notes["auth_pass"] == "hunter2"
    reply = b"".join(ask(sim, cmd(b"AUTH", b"admin", b"pa\nss")))
    assert reply.startswith(b"-WRONGPASS ")
    assert sim.notes["auth_user"] == "admin" and sim.notes["auth_pass"] == "pa\\x0ass"


def test_no_passwords_without_record_credentials():
    sim = Sim(redis.make(spec(record_credentials=False)))
    ask(sim, cmd(b"AUTH", b"admin", b"secret"))
    assert sim.notes["auth_user"] == "admin" and "auth_pass" not in sim.notes


def test_requirepass():
    sim = Sim(redis.make(spec(requirepass=True)))
    parts = ask(sim, cmd(b"INFO"))
    assert parts[0] == b"-NOAUTH" and b"".join(parts) == redis.R_NOAUTH
    assert b"".join(ask(sim, cmd(b"AUTH", b"x"))) == redis.R_WRONGPASS
    assert sim.notes["auth_pass"] == "x"


def test_hello_resp3_and_auth_inside():
    sim = Sim(redis.make(spec()))
    reply = b"".join(ask(sim, cmd(b"HELLO", b"3")))
    assert reply.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n") and b":3\r\n" in reply
    assert b"".join(ask(sim, cmd(b"HELLO", b"2"))).startswith(b"*14\r\n")
    assert b"".join(ask(sim, cmd(b"HELLO", b"9"))).startswith(b"-NOPROTO")
    ask(sim, cmd(b"HELLO", b"3", b"AUTH", b"default", b"pw"))
    assert sim.notes["auth_pass"] == "pw" and sim.notes["command"] == "HELLO"


def test_config_get_client_setinfo_unknown():
    sim = Sim(redis.make(spec()))
    reply = b"".join(ask(sim, cmd(b"CONFIG", b"GET", b"dir")))
    assert reply == b"*2\r\n$3\r\ndir\r\n$14\r\n/var/lib/redis\r\n"
    assert sim.notes["command"] == "CONFIG GET"
    assert b"".join(ask(sim, cmd(b"config", b"set", b"dir", b"/tmp"))) == b"+OK\r\n"
    ask(sim, cmd(b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"))
    assert sim.notes["client"] == "redis-py"
    reply = b"".join(ask(sim, cmd(b"FOO\r\n", b"a")))
    assert reply == b"-ERR unknown command 'FOO\\x0d\\x0a', with args beginning with: 'a'\r\n"


def test_pipelined_commands_answered_in_order():
    sim = Sim(redis.make(spec()))
    sim.feed(cmd(b"PING") + cmd(b"GET", b"k"))
    sim.feed(b"QUIT\r\n")  # arrives while a reply drips: kept, bounded
    assert b"".join(sim.segments()) == b"+PONG\r\n$-1\r\n+OK\r\n"
    assert sim.closed


def test_input_in_pieces():
    sim = Sim(redis.make(spec()))
    data = cmd(b"AUTH", b"user", b"pass")
    for i in range(len(data)):
        sim.feed(data[i : i + 1])
    assert b"".join(sim.segments()) == redis.R_WRONGPASS


@pytest.mark.parametrize(
    "data, reply",
    [
        (b"*1\r\n$999999999\r\n", redis.R_BULK_LEN),
        (b"*99999\r\n", redis.R_MULTI_LEN),
        (b"*1\r\n$-5\r\n", redis.R_BULK_LEN),
        (b"*x\r\n", redis.R_MULTI_LEN),
    ],
)
def test_protocol_errors_close(data, reply):
    sim = Sim(redis.make(spec()))
    assert b"".join(ask(sim, data)) == reply
    assert sim.closed


def test_input_bound():
    """An endless inline line fills INPUT_MAX, no more; then Redis's error and close."""
    sim = Sim(redis.make(spec()))
    for _ in range(_drip.INPUT_MAX // 1000):
        sim.feed(b"x" * 1000)
        assert len(sim.obj.buf) <= _drip.INPUT_MAX
    assert b"".join(ask(sim, b"x" * 1000)) == redis.R_TOO_BIG
    assert sim.closed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12))
def test_fuzz(chunks):
    fuzz(redis.make(spec()), chunks, _drip.INPUT_MAX)


def test_flood_while_a_reply_drips_is_dropped_not_kept():
    sim = Sim(redis.make(spec()))
    sim.feed(cmd(b"INFO"))
    sim.tick()
    for _ in range(10):
        sim.feed(b"y" * 1000)  # no newline: never a command
        assert len(sim.obj.buf) <= _drip.INPUT_MAX
    reply = b"".join(sim.segments())
    assert read_bulk(reply).startswith(b"# Server")  # the INFO reply went out whole
