"""Every bad config or command line: one clear line, no traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from typing import NamedTuple

import pytest

from support import ADMIN_DEFAULT_GROUP, hold_default_admin_port
from tarry.bait import Bounds
from tarry.config import DEFAULT_CONFIG, ConfigError, EndlesshConfig, load_endlessh, parse

GOOD = '[[tarpit]]\nprotocol = "ssh"\nlisten = ["127.0.0.1:0"]\n'


def run(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tarry", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:0']\nbogus = 1\n",
            ["bogus", "unknown key"],
        ),
        (
            "[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:0']\ndelay = 'x'\n",
            ["delay", "number"],
        ),
        (
            "[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:0']\ndelay = -1\n",
            ["delay", "greater than 0"],
        ),
        ("[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:0']\ndelay = true\n", ["delay"]),
        (
            "[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:0']\nmax_clients = 0\n",
            ["max_clients", "from 1 to"],
        ),
        (
            "[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:0']\nline_length = 256\n",
            ["line_length", "from 3 to 255"],
        ),
        ("[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:0']\njitter = 1.5\n", ["jitter"]),
        ("[[tarpit]]\nprotocol = 'gopher'\nlisten = ['127.0.0.1:0']\n", ["protocol", "gopher"]),
        ("[[tarpit]]\nlisten = ['127.0.0.1:0']\n", ["protocol", "missing"]),
        ("[[tarpit]]\nprotocol = 'ssh'\nlisten = ['localhost:22']\n", ["listen", "not an IP"]),
        ("[[tarpit]]\nprotocol = 'ssh'\nlisten = ['127.0.0.1:99999']\n", ["listen", "65535"]),
        ("[[tarpit]]\nprotocol = 'ssh'\nlisten = ['::1:22']\n", ["listen", "brackets"]),
        ("[[tarpit]]\nprotocol = 'ssh'\nlisten = '127.0.0.1:22'\n", ["listen", "list"]),
        ("[[tarpit]]\nprotocol = 'ssh'\nlisten = [22]\n", ["listen", "string"]),
        ("[nonsense]\nx = 1\n" + GOOD, ["nonsense", "unknown section"]),
        ("[engine]\nwrite_timeout = 0\n" + GOOD, ["write_timeout"]),
        ("[log]\nlevel = 'loud'\n" + GOOD, ["level", "loud"]),
        ("tarpit = 3\n", ["tarpit", "array of tables"]),
        ("[engine]\n", ["no [[tarpit]]"]),
        ("[[tarpit]\nprotocol = 'ssh'\n", ["not valid TOML"]),
        (GOOD.replace(":0", ":2222") * 2, ["2222", "also used"]),
    ],
)
def test_bad_config_gives_one_line(tmp_path, text: str, needles: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        parse(text, str(path))
    for needle in needles:
        assert needle in str(err.value)
    # and the CLI says the same in one line, for check-config and serve alike
    line = one_line_error(run("check-config", str(path)), str(path), *needles)
    assert line.startswith("tarry: ")
    one_line_error(run("serve", "-c", str(path)), str(path), *needles)


def test_missing_and_unreadable_files(tmp_path) -> None:
    one_line_error(run("check-config", str(tmp_path / "nope.toml")), "nope.toml", "cannot read")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    one_line_error(run("check-config", str(binary)), "bin.toml")


def test_port_in_use_is_one_line(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "t.toml"
        path.write_text(GOOD.replace(":0", f":{port}"))
        one_line_error(run("serve", "-c", str(path)), "listen", f"127.0.0.1:{port}", "in use")
        one_line_error(run("check-config", str(path)), "in use")
        one_line_error(run("ssh", "-4", "-p", str(port)), "in use")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_low_port_without_privilege_is_one_line(tmp_path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    import tempfile

    # somewhere the unprivileged user can read (pytest's tmp_path is private to root)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir="/tmp") as f:
        f.write(GOOD.replace(":0", ":22"))
        f.flush()
        os.chmod(f.name, 0o644)
        result = run("check-config", f.name, user="nobody")
    one_line_error(result, "127.0.0.1:22", "permission denied", "below 1024")


def test_default_config_is_valid_and_printed() -> None:
    result = run("default-config")
    assert result.returncode == 0
    cfg = parse(result.stdout)
    assert cfg.tarpits[0].protocol == "ssh"
    # it runs as the embedded defaults do: the added sections are all comments
    embedded = parse(DEFAULT_CONFIG)
    assert cfg.sections == embedded.sections and cfg.tarpits == embedded.tarpits


def test_default_config_names_every_section_and_key() -> None:
    """Every section and every key, from the tables that check them, so a key
    added later is printed too; each key with its default."""
    from tarry.config import SECTIONS as CONFIG_SECTIONS
    from tarry.fullconfig import _toml
    from tarry.observe import SECTIONS

    out = run("default-config").stdout
    lines = [line.strip() for line in out.splitlines()]
    for section in CONFIG_SECTIONS:
        assert any(line.lstrip("# ").startswith(f"[{section}]") for line in lines), section
    for section, keys in SECTIONS.items():
        for key, spec in keys.items():
            wanted = f"{key} = {_toml(spec.default)}"
            assert any(line.lstrip("# ").startswith(wanted) for line in lines), (section, key)
    assert '# listen = "127.0.0.1:8787"' in out and "# retention_days = 90" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-d", "0"], "Invalid delay: 0"),
        (["-d", "abc"], "Invalid delay: abc"),
        (["-l", "2"], "Invalid line length: 2"),
        (["-l", "256"], "Invalid line length: 256"),
        (["-m", "0"], "Invalid max clients: 0"),
        (["-p", "70000"], "Invalid port: 70000"),
        (["-x"], "option -x not recognized"),
        (["-p"], "option -p requires argument"),
        (["extra"], "too many arguments"),
        # (a missing -f file is no error, as in endlessh: test_syslog_ident.py)
        # numbers past any bound, negative, or not numbers at all
        (["-d", "99999999999999999999"], "Invalid delay: 99999999999999999999"),
        (["-d", "-1"], "Invalid delay: -1"),
        (["-d", "1e3"], "Invalid delay: 1e3"),
        (["-d", "9" * 5000], "Invalid delay: 9999"),
        (["-m", "99999999999999999999"], "Invalid max clients: 99999999999999999999"),
        (["-l", "nan"], "Invalid line length: nan"),
        (["-p", "-1"], "Invalid port: -1"),
    ],
)
def test_tarry_ssh_bad_flags_are_one_line(args: list[str], needle: str) -> None:
    one_line_error(run("ssh", *args), needle)


def test_tarry_ssh_help_and_version() -> None:
    result = run("ssh", "-h")
    assert result.returncode == 0 and "-d INT    Message millisecond delay [10000]" in result.stdout
    result = run("ssh", "-V")
    assert result.returncode == 0 and "Endlessh 1.1 compatible" in result.stdout


def test_cli_usage_errors_are_one_line() -> None:
    one_line_error(run("frobnicate"), "invalid choice")
    one_line_error(run("serve", "--bogus"), "--bogus")


def test_endlessh_config_file(tmp_path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "# a comment\nPort 2200\nDelay 500   # inline\nMaxLineLength 64\n"
        "MaxClients 10\nLogLevel 2\nBindFamily 6\n\nUnknownThing 3\n"
    )
    warnings: list[str] = []
    cfg = EndlesshConfig()
    load_endlessh(cfg, str(path), hard=True, warn=warnings.append)
    assert (cfg.port, cfg.delay, cfg.max_line_length, cfg.max_clients) == (2200, 500, 64, 10)
    assert (cfg.log_level, cfg.bind_family) == (2, 6)
    assert cfg.listen() == "[::]:2200" and cfg.spec().delay == 0.5
    assert warnings == [f"{path}:9: Unknown option 'UnknownThing'"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Port\n", ":1: Missing value"),
        ("Port 1 2\n", ":1: Too many values"),
        ("Delay 0\n", "Invalid delay: 0"),
        ("LogLevel 3\n", "Invalid log level '3'"),
        ("BindFamily 5\n", "Invalid address family: 5"),
    ],
)
def test_endlessh_config_errors(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    # at start-up: fatal, one line
    one_line_error(run("ssh", "-f", str(path)), message)
    # on reload: a warning, and the old value stays
    cfg = EndlesshConfig()
    warnings: list[str] = []
    load_endlessh(cfg, str(path), hard=False, warn=warnings.append)
    assert cfg == EndlesshConfig() and len(warnings) == 1 and message in warnings[0]


# ---- every numeric key: finite and bounded (issue 17, item 8) -----------------


class NumericKey(NamedTuple):
    table: str  # how the error line names the table
    head: str  # the config text up to the key
    key: str
    bounds: Bounds


def numeric_keys() -> list[NumericKey]:
    """Every numeric key a config file may set, read from the declarations, so
    that a key added later is covered too."""
    from tarry.baits import registry
    from tarry.config import COMMON, LIMITS, WORKERS_OPTION, WRITE_TIMEOUT_OPTION
    from tarry.observe import SECTIONS

    out: list[NumericKey] = []
    for proto, module in sorted(registry().items()):
        head = f'[[tarpit]]\nprotocol = "{proto}"\nlisten = ["127.0.0.1:0"]\n'
        for key, opt in {**COMMON, **module.options}.items():
            if opt.bounds is not None:
                out.append(NumericKey(f"[[tarpit]] #1 ({proto})", head, key, opt.bounds))
    for key, opt in (("write_timeout", WRITE_TIMEOUT_OPTION), ("workers", WORKERS_OPTION)):
        assert opt.bounds is not None
        out.append(NumericKey("[engine]", GOOD + "[engine]\n", key, opt.bounds))
    for key, opt in LIMITS.items():
        if opt.bounds is not None:
            out.append(NumericKey("[limits]", GOOD + "[limits]\n", key, opt.bounds))
    for section, keys in SECTIONS.items():
        for key, spec in keys.items():
            if spec.bounds is not None:
                out.append(NumericKey(f"[{section}]", GOOD + f"[{section}]\n", key, spec.bounds))
    return out


NUMERIC_KEYS = numeric_keys()


def test_the_numeric_key_table_is_complete() -> None:
    """The table comes from the declarations: it must not come out empty, and a
    numeric option without bounds cannot even be declared."""
    names = {(k.table.split(" #")[0], k.key) for k in NUMERIC_KEYS}
    for expected in [
        ("[[tarpit]]", "delay"),
        ("[[tarpit]]", "first_delay"),
        ("[[tarpit]]", "session_limit"),
        ("[[tarpit]]", "tls_stutter"),
        ("[[tarpit]]", "request_timeout"),
        ("[engine]", "write_timeout"),
        ("[engine]", "workers"),
        ("[limits]", "max_clients"),
        ("[history]", "flush_interval"),
        ("[metrics]", "per_ip_expiry"),
        ("[log]", "buffer"),
    ]:
        assert expected in names, expected
    from tarry.bait import Option
    from tarry.observe import Key

    with pytest.raises(TypeError, match="bounds"):
        Option(1.0, (int, float), "a wait")
    with pytest.raises(TypeError, match="bounds"):
        Key(1, int)


def run_env(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tarry`` with its state directory in ``tmp_path``: should a bad config be
    taken, ``serve`` writes nothing where the user's tarry keeps its history."""
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "tarry", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.parametrize(
    "case", NUMERIC_KEYS, ids=[f"{k.table.split()[-1].strip('[]()')}-{k.key}" for k in NUMERIC_KEYS]
)
def test_non_finite_and_huge_numbers_are_one_line(tmp_path, case: NumericKey) -> None:
    """inf, nan and 1e308 once passed the checks, and every accept then raised
    OverflowError. Each is refused, by check-config and serve alike, in one line
    that names the file, the table, the key and the range it takes."""
    path = tmp_path / "bad.toml"
    for value in ("inf", "nan", "1e308", "-1e308"):
        path.write_text(case.head + f"{case.key} = {value}\n")
        for args in (["check-config", str(path)], ["serve", "-c", str(path)]):
            result = run_env(tmp_path, *args)
            assert result.returncode == 1, (args, value, result.stderr)
            one_line_error(result, f"tarry: {path}: {case.table} ", case.key, case.bounds.text())
    # integers far past any bound (the same code path: checked in-process)
    for value in ("99999999999999999999", "-99999999999999999999"):
        with pytest.raises(ConfigError) as err:
            parse(case.head + f"{case.key} = {value}\n", str(path))
        assert f"{case.key}: " in str(err.value) and case.bounds.text() in str(err.value)


def test_an_integer_too_long_to_read_is_one_line(tmp_path) -> None:
    """tomllib raises a bare ValueError for an integer of over 4,300 digits."""
    path = tmp_path / "bad.toml"
    path.write_text(GOOD + "delay = " + "9" * 5000 + "\n")
    for args in (["check-config", str(path)], ["serve", "-c", str(path)]):
        one_line_error(run_env(tmp_path, *args), f"tarry: {path}: not valid TOML")


# ---- check-config runs serve's checks (issue 17, item 11) ------------------------


def test_check_config_refuses_what_serve_refuses(tmp_path) -> None:
    """A missing geo database, a busy [admin] port and a busy listener: each
    once passed check-config and then stopped serve. Both now say the same line."""
    root = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    path = tmp_path / "t.toml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = f"127.0.0.1:{port}"
        cases = [
            (f'[admin]\nlisten = "{busy}"\n', ["admin.listen", busy, "in use"]),
            (f'[geo]\nmmdb = "{tmp_path / "none.mmdb"}"\n', ["geo.mmdb", "no such file"]),
            (GOOD.replace(":0", f":{port}"), ["[[tarpit]] #2", "listen", busy, "in use"]),
            # serve with workers takes its own path to the same checks
            (f'[engine]\nworkers = 2\n[admin]\nlisten = "{busy}"\n', ["admin.listen", busy]),
        ]
        for extra, needles in cases:
            path.write_text(GOOD + root + "[history]\nenabled = false\n" + extra)
            checked = one_line_error(run_env(tmp_path, "check-config", str(path)), *needles)
            served = one_line_error(run_env(tmp_path, "serve", "-c", str(path)), *needles)
            assert checked == served == f"tarry: {path}: " + checked.split(f"{path}: ", 1)[1]
        # --no-bind leaves the addresses alone (a running tarry holds them)
        path.write_text(GOOD + root + cases[0][0])
        result = run_env(tmp_path, "check-config", "--no-bind", str(path))
        assert result.returncode == 0 and result.stderr == "", result.stderr
    # and the admin address is let go again: serve can take it at once
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", 0))
        port = again.getsockname()[1]
    path.write_text(
        GOOD + root + f'[history]\nenabled = false\n[admin]\nlisten = "127.0.0.1:{port}"\n'
    )
    result = run_env(tmp_path, "check-config", str(path))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    with socket.socket() as s:  # nothing of check-config's is left holding it
        s.bind(("127.0.0.1", port))


@ADMIN_DEFAULT_GROUP
def test_a_taken_default_admin_port_is_a_warning_in_check_config_too(tmp_path) -> None:
    """serve runs without the dashboard when the default 127.0.0.1:8787 is taken;
    check-config says the same warning, and passes."""
    blocker = hold_default_admin_port()
    try:
        path = tmp_path / "t.toml"
        path.write_text(GOOD + "[history]\nenabled = false\n")
        result = run_env(tmp_path, "check-config", str(path))
    finally:
        blocker.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "tarry: dashboard off: admin.listen = '127.0.0.1:8787': address already in use"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="the user to become is looked up only as root")
def test_check_config_looks_up_the_user_to_become(tmp_path) -> None:
    """As root, serve becomes [privileges] user: one that does not exist once
    passed check-config and stopped serve."""
    path = tmp_path / "t.toml"
    path.write_text(GOOD + '[privileges]\nuser = "tarry-no-such-user"\n')
    needles = [str(path), "[privileges] user: no user named 'tarry-no-such-user'"]
    checked = one_line_error(run_env(tmp_path, "check-config", str(path)), *needles)
    assert checked == one_line_error(run_env(tmp_path, "serve", "-c", str(path)), *needles)


def test_check_config_refuses_uvloop_when_it_is_not_installed(tmp_path) -> None:
    """loop = "uvloop" without the 'fast' extra stopped serve and passed
    check-config. uvloop is hidden by a package of that name that fails to import."""
    hide = tmp_path / "hide" / "uvloop"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('uvloop is not installed')\n")
    path = tmp_path / "t.toml"
    path.write_text('[engine]\nloop = "uvloop"\n' + GOOD)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hide.parent), os.environ.get("PYTHONPATH", "")]),
        "XDG_STATE_HOME": str(tmp_path),
    }
    needles = [f"{path}: [engine] loop = \"uvloop\" needs the 'fast' extra"]
    lines = []
    for args in (["check-config", str(path)], ["serve", "-c", str(path)]):
        cmd = [sys.executable, "-m", "tarry", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
        lines.append(one_line_error(result, *needles))
    assert lines[0] == lines[1]


def test_default_config_database_tables_work_uncommented():
    """`tarry default-config` shows the database baits commented; uncommented, they
    are valid tables with their own defaults."""
    from tarry.baits import registry

    block = DEFAULT_CONFIG[DEFAULT_CONFIG.index("# Databases") :].split("\n\n")[0]
    lines = [line.removeprefix("# ") for line in block.splitlines()[1:] if line != "#"]
    tarpits = parse(DEFAULT_CONFIG + "\n".join(lines) + "\n").tarpits
    found = {t.protocol: t for t in tarpits if t.protocol in ("redis", "mysql", "postgresql")}
    assert sorted(found) == ["mysql", "postgresql", "redis"]
    for proto, t in found.items():
        assert t.delay == registry()[proto].defaults["delay"]
        assert t.options["record_credentials"] is True
    assert not {t.protocol for t in parse(DEFAULT_CONFIG).tarpits} & set(found)  # off by default
