"""Seconds each real attack tool is held: tarry against the endless reference, in the same run.

Starts ``tarry serve`` (its embedded defaults, as ``tarry default-config`` prints them, on free
loopback ports) and one ``bench/reference_endless.py`` per protocol, then runs every tool of
``TOOLS`` twice at the same moment, once against each. A run is held until the tool exits (it
gave up, or it finished "finding" nothing) or until ``--cap``, when its process group is killed.
Brute-forcers get 120 passwords and busters 1,200 paths, so a tool that moves on after a
per-connection timeout is measured over its whole run. Everything stays on loopback.

Usage: python bench/gauntlet.py [--cap 300] [--proto ssh,http,smtp] [--tools a,b]
                                [--parallel 8] [--set ssh.mode=adaptive] [--tarry-config FILE]
                                [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PY = sys.executable
# Debian's Python tools (dirsearch's wrapper calls "python3") need Debian's python3 and its
# packages, not a virtualenv's or pyenv's that may come first on PATH.
SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
TOOL_PATH = os.pathsep.join([*SYSTEM_PATH, *os.environ.get("PATH", "").split(os.pathsep)])
LESS_MARGIN = 2.0  # tarry may hold a tool this much less than the reference before it counts

# --- the tools ---------------------------------------------------------------------------------
# Scripts for the client libraries and the bulk sender: python -c SCRIPT ARGS.

PARAMIKO = """
import sys, paramiko
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
try:
    c.connect("127.0.0.1", port=int(sys.argv[1]), username="root", password="123456",
              look_for_keys=False, allow_agent=False)
except Exception as e:
    print(type(e).__name__, e)
"""

ASYNCSSH = """
import asyncio, sys, asyncssh
async def main():
    try:
        await asyncssh.connect("127.0.0.1", port=int(sys.argv[1]), username="root",
                               password="123456", known_hosts=None)
    except Exception as e:
        print(type(e).__name__, e)
asyncio.run(main())
"""

# A spam script: 20 messages, 3 recipients each, one connection per message; it gives up on a
# message after its socket timeout (30 s, as such scripts set it) and goes on to the next.
SMTPLIB_BULK = """
import smtplib, sys
port = int(sys.argv[1])
for i in range(20):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("offers@gauntlet.test",
                       [f"user{i}@example.com", f"info{i}@example.org", f"sales{i}@example.net"],
                       f"Subject: offer {i}\\r\\n\\r\\nBuy now.\\r\\n")
    except Exception as e:
        print(i, type(e).__name__, e, flush=True)
"""

# exim4 as the spammer's relay: a manualroute smarthost to the port under test, delivered in
# the foreground (-odf) by one non-daemon exim process, with every smtp-transport timeout at
# its default. The spool and logs live in the run's own directory.
EXIM_CONF = """
primary_hostname = relay.gauntlet.test
qualify_domain = gauntlet.test
spool_directory = {cwd}/spool
log_file_path = {cwd}/%slog
exim_path = {exe}
acl_not_smtp = acl_accept
begin acl
acl_accept:
  accept
begin routers
to_tarpit:
  driver = manualroute
  domains = *
  transport = tarpit_smtp
  route_list = * 127.0.0.1 byname
  self = send
begin transports
tarpit_smtp:
  driver = smtp
  port = {port}
  allow_localhost
begin retry
* * F,1h,15m
"""

MESSAGE = "From: offers@gauntlet.test\nSubject: offer\n\nBuy now.\n"


@dataclass(frozen=True)
class Tool:
    """One tool run: its argv is formatted with {port} {host} {url} {cwd} {inputs} {py} {exe}."""

    name: str
    proto: str  # ssh, http, smtp
    category: str
    argv: tuple[str, ...]
    timeouts: str  # what bounds its wait, and where that is written (docs/client-limits.md)
    program: str = ""  # the executable that must be installed (default: argv[0])
    files: dict[str, str] = field(default_factory=dict)  # name -> template, written to cwd
    stdin: str = ""  # template fed to its standard input

    @property
    def exe(self) -> str:
        return self.program or self.argv[0]


NMAP = ("nmap", "-n", "-Pn", "-p", "{port}")
TOOLS: list[Tool] = [
    # --- SSH ---
    Tool("patator-ssh", "ssh", "brute-forcer",
         ("patator", "ssh_login", "host=127.0.0.1", "port={port}", "user=root",
          "password=FILE0", "0={inputs}/passwords.txt"),
         "paramiko Transport defaults (banner 15 s per read, handshake 15 s); 10 processes, 4 retries"),
    Tool("hydra-ssh", "ssh", "brute-forcer",
         ("hydra", "-I", "-t", "4", "-l", "root", "-P", "{inputs}/passwords.txt", "-s", "{port}",
          "ssh://127.0.0.1"),
         "libssh connect timeout = -w 32 s for banner and kex; a failed connect ends the run; -t 4"),
    Tool("medusa-ssh", "ssh", "brute-forcer",
         ("medusa", "-h", "127.0.0.1", "-n", "{port}", "-u", "root",
          "-P", "{inputs}/passwords.txt", "-M", "ssh"),
         "libssh2 handshake with no timeout; connect 3 s, 3 retries"),
    Tool("ncrack-ssh", "ssh", "brute-forcer",
         ("ncrack", "--user", "root", "-P", "{inputs}/passwords.txt", "ssh://127.0.0.1:{port}"),
         "20 s per read (SSH_TIMEOUT), non-SSH lines skipped; connect 5 s"),
    Tool("nmap-sV-ssh", "ssh", "version scanner", (*NMAP, "-sV", "127.0.0.1"),
         "waits: NULL probe 6 s in all, then one connection per probe"),
    Tool("nmap-nse-ssh", "ssh", "audit scanner",
         (*NMAP, "--script", "+ssh2-enum-algos,+ssh-auth-methods,+ssh-hostkey", "127.0.0.1"),
         "NSE socket operations 30 s each"),
    Tool("nmap-ssh-brute", "ssh", "brute-forcer",
         (*NMAP, "--script", "+ssh-brute", "--script-args",
          "userdb={inputs}/users.txt,passdb={inputs}/passwords.txt", "127.0.0.1"),
         "ssh-brute.timeout 5 s (libssh2)"),
    Tool("ssh-audit", "ssh", "audit scanner", ("ssh-audit", "-p", "{port}", "127.0.0.1"),
         "5 s per read; sends its version first"),
    Tool("ssh-ct10", "ssh", "client (bot)",
         ("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
          "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-p", "{port}",
          "root@127.0.0.1", "true"),
         "ConnectTimeout=10: one budget for connect and banner exchange"),
    Tool("paramiko", "ssh", "client library", (PY, "-c", PARAMIKO, "{port}"),
         "15 s per read of the first line, then 2 s; handshake 15 s; 100 lines", program="python"),
    Tool("asyncssh", "ssh", "client library", (PY, "-c", ASYNCSSH, "{port}"),
         "login_timeout 120 s in all", program="python"),
    Tool("dbclient", "ssh", "client",
         ("dbclient", "-y", "-y", "-p", "{port}", "root@127.0.0.1", "true"),
         "50 pre-banner lines, no timer"),
    Tool("plink", "ssh", "client",
         ("plink", "-batch", "-ssh", "-P", "{port}", "-l", "root", "-pw", "123456",
          "127.0.0.1", "true"),
         "no banner limit, no timer"),
    # --- HTTP ---
    Tool("dirb", "http", "directory buster",
         ("dirb", "{url}/", "{inputs}/words.txt", "-S", "-r", "-o", "{cwd}/dirb.txt"),
         "libcurl defaults: no read or total timeout"),
    Tool("gobuster", "http", "directory buster",
         ("gobuster", "dir", "-q", "-u", "{url}/", "-w", "{inputs}/words.txt", "-o",
          "{cwd}/gobuster.txt"),
         "Go Client.Timeout 10 s per request; a failed first request ends the run"),
    Tool("ffuf", "http", "fuzzer",
         ("ffuf", "-s", "-u", "{url}/FUZZ", "-w", "{inputs}/words.txt"),
         "Go Client.Timeout 10 s per request; 40 threads; no target check"),
    Tool("wfuzz", "http", "fuzzer",
         ("wfuzz", "-f", "{cwd}/wfuzz.txt", "--hc", "404", "-w", "{inputs}/words.txt",
          "{url}/FUZZ"),
         "pycurl 90 s per request; the first timeout is fatal"),
    Tool("dirsearch", "http", "directory buster",
         ("dirsearch", "-q", "-u", "{url}/", "-w", "{inputs}/words.txt", "--format", "plain",
          "-o", "{cwd}/dirsearch.txt"),
         "requests 5 s per read, 2 retries, 30 threads; 100 header lines"),
    Tool("whatweb", "http", "fingerprinter", ("whatweb", "--no-errors", "{url}/"),
         "Net::HTTP open 15 s, read 30 s; 25 threads"),
    Tool("wafw00f", "http", "fingerprinter", ("wafw00f", "{url}/"),
         "requests 7 s per read"),
    Tool("sqlmap", "http", "vulnerability scanner",
         ("sqlmap", "-u", "{url}/item.php?id=1", "--batch", "--output-dir", "{cwd}/sqlmap"),
         "30 s per read, 3 retries; 100 header lines"),
    Tool("wapiti", "http", "vulnerability scanner",
         ("wapiti", "-u", "{url}/", "--flush-session", "-f", "txt", "-o", "{cwd}/wapiti.txt"),
         "requests 6 s per read"),
    Tool("nmap-sV-http", "http", "version scanner", (*NMAP, "-sV", "127.0.0.1"),
         "waits: NULL probe 6 s, then GetRequest and others"),
    Tool("nmap-nse-http", "http", "crawler/enumerator",
         (*NMAP, "--script", "+http-title,+http-headers,+http-enum", "127.0.0.1"),
         "NSE socket operations 30 s each"),
    Tool("curl", "http", "client", ("curl", "-s", "-o", "/dev/null", "{url}/"),
         "connect 300 s; no read or total timeout; 300 KiB of headers"),
    Tool("wget", "http", "client",
         ("wget", "-q", "-O", "/dev/null", "{url}/"), "900 s idle read timeout, 20 tries, 64 KiB head"),
    Tool("chromium", "http", "headless browser",
         ("chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
          "--user-data-dir={cwd}/profile", "--dump-dom", "{url}/"),
         "no timeout; 256 KiB head"),
    # --- SMTP ---
    Tool("swaks", "smtp", "sender",
         ("swaks", "--server", "127.0.0.1", "--port", "{port}", "--from",
          "offers@gauntlet.test", "--to", "a@example.com,b@example.org,c@example.net"),
         "30 s per whole reply (alarm), then QUIT"),
    Tool("sendemail", "smtp", "bulk sender",
         ("sendemail", "-q", "-f", "offers@gauntlet.test", "-t", "a@example.com",
          "b@example.org", "c@example.net", "-u", "offer", "-m", "Buy now.", "-s",
          "127.0.0.1:{port}"),
         "60 s per reply and 60 s for the whole program"),
    Tool("smtplib-bulk", "smtp", "bulk sender", (PY, "-c", SMTPLIB_BULK, "{port}"),
         "socket timeout 30 s per message, 20 messages", program="python"),
    Tool("exim4", "smtp", "MTA relay",
         ("{exe}", "-C", "{cwd}/exim.conf", "-odf", "-oi", "-f", "offers@gauntlet.test",
          "a@example.com", "b@example.org", "c@example.net"),
         "command_timeout 5 min per whole reply, greeting included; 4,096 B per reply",
         program="exim4", files={"exim.conf": EXIM_CONF}, stdin=MESSAGE),
    Tool("curl-smtp", "smtp", "sender",
         ("curl", "-s", "smtp://127.0.0.1:{port}", "--mail-from", "offers@gauntlet.test",
          "--mail-rcpt", "a@example.com", "--mail-rcpt", "b@example.org", "-T", "-"),
         "libcurl response timeout: 120 s per whole reply (measured)", stdin=MESSAGE),
    Tool("smtp-user-enum", "smtp", "user enumerator",
         ("smtp-user-enum", "-U", "{inputs}/users.txt", "127.0.0.1", "{port}"),
         "25 s per read of the greeting, 4 retries"),
    Tool("hydra-smtp", "smtp", "brute-forcer",
         ("hydra", "-I", "-t", "4", "-l", "admin@example.com", "-P", "{inputs}/passwords.txt",
          "-s", "{port}", "smtp://127.0.0.1"),
         "judges the greeting by its first segment (strstr 220); -w 32 s; -t 4"),
    Tool("medusa-smtp", "smtp", "brute-forcer",
         ("medusa", "-h", "127.0.0.1", "-n", "{port}", "-u", "admin",
          "-P", "{inputs}/passwords.txt", "-M", "smtp"),
         "the whole 220 line within ~0.3 s of the first segment; 20 s first wait"),
    Tool("patator-smtp", "smtp", "brute-forcer",
         ("patator", "smtp_login", "host=127.0.0.1", "port={port}", "user=admin",
          "password=FILE0", "0={inputs}/passwords.txt"),
         "smtplib with a 10 s socket timeout; 10 processes, 4 retries"),
    Tool("nmap-sV-smtp", "smtp", "version scanner", (*NMAP, "-sV", "127.0.0.1"),
         "waits: NULL probe 6 s in all"),
    Tool("nmap-nse-smtp", "smtp", "enumerator",
         (*NMAP, "--script", "+smtp-commands,+smtp-enum-users,+smtp-open-relay", "127.0.0.1"),
         "10 s per socket operation; EHLO after the first greeting line"),
]  # fmt: skip


def resolve(tool: Tool) -> str | None:
    """The tool's executable, or None when it is not installed."""
    if tool.exe == "python":
        return PY
    return shutil.which(tool.exe, path=TOOL_PATH)


# --- inputs ----------------------------------------------------------------------------------


def make_inputs(where: Path) -> None:
    """Realistic inputs: 120 passwords, 1,200 paths, 100 user names (no downloads)."""
    where.mkdir(parents=True, exist_ok=True)
    base = ["123456", "password", "admin", "root", "qwerty", "letmein", "toor", "changeme"]
    pw = base + [f"{w}{n}" for n in range(14) for w in base][: 120 - len(base)]
    (where / "passwords.txt").write_text("\n".join(pw) + "\n")
    stems = ["admin", "login", "backup", "config", "api", "old", "test", "wp", "db", "cgi-bin",
             "images", "static", "uploads", "private", "dev", "staging", "shop", "user",
             "phpmyadmin", "server-status", "include", "data", "files", "logs"]  # fmt: skip
    words = [f"{s}{n}" if n else s for n in range(60) for s in stems][:1200]
    (where / "words.txt").write_text("\n".join(words) + "\n")
    users = ["root", "admin", "postmaster", "info", "sales", "support", "webmaster", "test"]
    users += [f"user{n}" for n in range(100 - len(users))]
    (where / "users.txt").write_text("\n".join(users) + "\n")


# --- servers ---------------------------------------------------------------------------------

STARTED: list[subprocess.Popen] = []


def set_key(lines: list[str], table: Callable[[str, dict], bool], key: str, value: str) -> bool:
    """Set KEY = VALUE in every table that TABLE(header, body) picks; False if none did."""
    out: list[list[str]] = [[]]
    for ln in lines:  # split into [preamble, table, table, ...]
        if ln.lstrip().startswith("["):
            out.append([])
        out[-1].append(ln)
    done = False
    for block in out[1:]:
        body = tomllib.loads("\n".join(block[1:]))
        if not table(block[0].strip(), body):
            continue
        block[1:] = [ln for ln in block[1:] if not re.match(rf"\s*{re.escape(key)}\s*=", ln)]
        block.insert(1, f"{key} = {value}")
        done = True
    lines[:] = [ln for block in out for ln in block]
    return done


def tarry_config(base: str, overrides: list[str]) -> str:
    """BASE with every listener on a free loopback port, plus the bench's own settings."""
    lines = base.splitlines()
    for proto in ("ssh", "http", "smtp"):
        set_key(lines, lambda h, b, p=proto: h == "[[tarpit]]" and b.get("protocol") == p,
                "listen", '["127.0.0.1:0"]')  # fmt: skip
        # every tool connects from 127.0.0.1, where on the Internet each has its own address
        set_key(lines, lambda h, b, p=proto: h == "[[tarpit]]" and b.get("protocol") == p,
                "max_clients_per_ip", "0")  # fmt: skip
    for o in overrides:
        m = re.fullmatch(r"(ssh|http|smtp)\.(\w+)=(.*)", o)
        if not m:
            raise SystemExit(f"--set {o!r}: want PROTO.KEY=VALUE, e.g. ssh.mode=adaptive")
        proto, key, value = m.groups()
        value = value if re.fullmatch(r"-?[\d.]+|true|false|\[.*\]|\".*\"", value) else f'"{value}"'
        if not set_key(lines, lambda h, b, p=proto: h == "[[tarpit]]" and b.get("protocol") == p,
                       key, value):  # fmt: skip
            raise SystemExit(f"--set {o!r}: the config has no {proto} tarpit")
    for section, key, value in (
        ("[privileges]", "allow_root", "true"),  # measure the process as it runs, even as root
        ("[admin]", "listen", '""'),  # no dashboard port to collide with
        ("[history]", "enabled", "false"),  # no state carried from one run to the next
    ):
        if not set_key(lines, lambda h, b, s=section: h.split("#")[0].strip() == s, key, value):
            lines += ["", section, f"{key} = {value}"]
    return "\n".join(lines) + "\n"


def describe_modes(cfg: str) -> dict[str, str]:
    """Each protocol's mode as the config states it (the key, or "default")."""
    modes = {}
    for t in tomllib.loads(cfg).get("tarpit", []):
        value = t.get("mode") or t.get("strategy")
        modes[t["protocol"]] = str(value) if value else "default"
    return modes


def start_server(cmd: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    STARTED.append(proc)
    return proc


def wait_ports(proc: subprocess.Popen, log: Path, pattern: str, want: int) -> list[re.Match]:
    deadline = time.monotonic() + 30
    while True:
        found = list(re.finditer(pattern, log.read_text()))
        if len(found) >= want:
            return found
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not listen ({proc.args}):\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def start_tarry(cfg: str, tmp: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    (tmp / "tarry.toml").write_text(cfg)
    env = dict(os.environ, XDG_STATE_HOME=str(tmp / "state"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    log = tmp / "tarry.log"
    proc = start_server([PY, "-m", "tarry", "serve", "-c", str(tmp / "tarry.toml")], log, env, tmp)
    want = len(tomllib.loads(cfg).get("tarpit", []))
    found = wait_ports(proc, log, r"LISTEN proto=(\w+) listener=127\.0\.0\.1:(\d+)", want)
    return proc, {m.group(1): int(m.group(2)) for m in found}


def start_reference(proto: str, tmp: Path, delay: float | None) -> tuple[subprocess.Popen, int]:
    cmd = [PY, str(BENCH / "reference_endless.py"), "--proto", proto]
    cmd += ["--delay", str(delay)] if delay is not None else []
    log = tmp / f"reference-{proto}.log"
    proc = start_server(cmd, log, dict(os.environ), tmp)
    return proc, int(wait_ports(proc, log, r"LISTEN 127\.0\.0\.1:(\d+)", 1)[0].group(1))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- one tool run ----------------------------------------------------------------------------


def become_subreaper() -> None:
    """Tools whose helpers leave their process group (exim's delivery calls setsid) and then
    lose their parent are reparented to this process instead of init, so they are still found."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap() -> None:
    """Collect every exited child, adopted ones too: as a subreaper, nobody else will."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid == 0:
            return


def descendants(root: int) -> list[int]:
    """Every process below ROOT, by parent links read from /proc."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def kill_tree(pid: int) -> None:
    """End a tool: its process group and every process below it, by PID."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [pid, *descendants(pid)]
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        for p in pids[1:]:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
                time.sleep(0.1)


def run_tool(tool: Tool, exe: str, port: int, cwd: Path, inputs: Path, cap: float) -> dict:
    """Run TOOL against PORT in its own process group; seconds until it exits, at most CAP."""
    cwd.mkdir(parents=True)
    (cwd / "spool").mkdir()
    os.chmod(cwd, 0o777)  # exim delivers as its own user and writes here
    os.chmod(cwd / "spool", 0o777)
    fmt = {"port": port, "host": "127.0.0.1", "url": f"http://127.0.0.1:{port}", "cwd": cwd,
           "inputs": inputs, "py": PY, "exe": exe}  # fmt: skip

    def fill(text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(fmt.get(m.group(1), m.group(0))), text)

    for name, text in tool.files.items():
        (cwd / name).write_text(fill(text))
    argv = [fill(a) for a in tool.argv]
    if argv[0] == tool.exe:
        argv[0] = exe
    env = dict(os.environ, PATH=TOOL_PATH, HOME=str(cwd), TERM="dumb")
    with open(cwd / "output.txt", "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        if tool.stdin:
            proc.stdin.write(fill(tool.stdin).encode())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except OSError:
        pass
    try:
        rc: int | None = proc.wait(cap)
        held = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        rc, held = None, cap
    kill_tree(proc.pid)  # also after a normal exit: helpers it left behind
    proc.wait()
    tail = (cwd / "output.txt").read_bytes()[-600:].decode(errors="replace").strip()
    return {"held": round(min(held, cap), 2), "rc": rc, "capped": rc is None, "tail": tail}


def run_pair(tool: Tool, exe: str, ports: dict, tmp: Path, inputs: Path, cap: float) -> dict:
    """The same tool against tarry and the reference, started together."""
    res: dict[str, dict] = {}

    def one(side: str) -> None:
        try:
            res[side] = run_tool(tool, exe, ports[side][tool.proto],
                                 tmp / "runs" / tool.name / side, inputs, cap)  # fmt: skip
        except Exception as e:  # a broken tool line must not end the gauntlet
            res[side] = {"held": 0.0, "rc": None, "capped": False, "tail": f"gauntlet: {e!r}"}

    threads = [threading.Thread(target=one, args=(s,)) for s in ("tarry", "reference")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"tool": tool.name, "proto": tool.proto, "category": tool.category,
            "timeouts": tool.timeouts, **{s: res[s] for s in ("tarry", "reference")}}  # fmt: skip


# --- report ----------------------------------------------------------------------------------


def table(rows: list[dict], modes: dict[str, str], cap: float) -> str:
    def cell(s: float) -> str:
        return f">={cap:g}" if s >= cap else f"{s:.1f}"

    head = ["tool", "category", "proto", "tarry mode", "tarry s", "reference s", "ratio", ""]
    body = []
    for r in rows:
        t, ref = r["tarry"]["held"], r["reference"]["held"]
        ratio = f"{t / ref:.2f}x" if ref > 0 else "-"
        flag = "LESS" if t < ref - LESS_MARGIN else ""
        body.append([r["tool"], r["category"], r["proto"], modes.get(r["proto"], "?"),
                     cell(t), cell(ref), ratio, flag])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells: list) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    return "\n".join(out)


def summary(rows: list[dict], cap: float) -> str:
    """Per protocol, over the tools the reference lost before the cap: total seconds held."""
    out = []
    for proto in ("ssh", "http", "smtp"):
        lost = [r for r in rows if r["proto"] == proto and r["reference"]["held"] < cap - 1]
        mine = [r for r in rows if r["proto"] == proto]
        if not mine:
            continue
        less = [r["tool"] for r in mine if r["tarry"]["held"] < r["reference"]["held"] - 2]
        t = sum(r["tarry"]["held"] for r in lost)
        ref = sum(r["reference"]["held"] for r in lost)
        ratio = f"{t / ref:.2f}x" if ref else "-"
        out.append(f"{proto}: {len(lost)} of {len(mine)} tools left the reference before the "
                   f"cap; over those, tarry {t:.0f} s vs reference {ref:.0f} s ({ratio}); "
                   f"held less by tarry: {', '.join(less) or 'none'}")  # fmt: skip
    return "\n".join(out)


def machine() -> dict:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
            "kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count()}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=float, default=300.0, help="seconds per tool run (300)")
    ap.add_argument("--proto", default="ssh,http,smtp", help="protocols to run")
    ap.add_argument("--tools", default="", help="only these tools (comma-separated names)")
    ap.add_argument("--parallel", type=int, default=0,
                    help="tool pairs at once (0 = all at once)")  # fmt: skip
    ap.add_argument("--tarry-config", type=Path, help="instead of `tarry default-config`")
    ap.add_argument("--set", action="append", default=[], metavar="PROTO.KEY=VALUE",
                    help="override a key of a protocol's tarpit, e.g. ssh.mode=adaptive")  # fmt: skip
    ap.add_argument("--ref-delay", type=float, help="the reference's delay (the article's)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (tool outputs)")
    ap.add_argument("--list", action="store_true", help="list the tools and exit")
    return ap.parse_args(argv)


def select(args: argparse.Namespace) -> list[Tool]:
    protos = set(args.proto.split(","))
    names = set(filter(None, args.tools.split(",")))
    unknown = names - {t.name for t in TOOLS}
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    return [t for t in TOOLS if t.proto in protos and (not names or t.name in names)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools = select(args)
    become_subreaper()
    if args.list:
        for t in tools:
            print(f"{t.name:16} {t.proto:5} {t.category:22} {t.timeouts}")
        return 0
    missing = [t.name for t in tools if resolve(t) is None]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)} "
              "(scripts/install-gauntlet-tools.sh)", file=sys.stderr)  # fmt: skip
        tools = [t for t in tools if t.name not in missing]
    tmp = Path(tempfile.mkdtemp(prefix="tarry-gauntlet-"))
    os.chmod(tmp, 0o755)
    inputs = tmp / "inputs"
    make_inputs(inputs)
    os.chmod(inputs, 0o755)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    if args.tarry_config:
        base = args.tarry_config.read_text()
    else:
        base = subprocess.run([PY, "-m", "tarry", "default-config"], env=env, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip
    cfg = tarry_config(base, args.set)
    modes = describe_modes(cfg)
    print("command: python bench/gauntlet.py " + " ".join(argv or sys.argv[1:]))
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()))
    try:
        _, tports = start_tarry(cfg, tmp)
        ports: dict[str, dict[str, int]] = {"tarry": tports, "reference": {}}
        for proto in sorted({t.proto for t in tools}):
            _, ports["reference"][proto] = start_reference(proto, tmp, args.ref_delay)
        print(f"tarry modes: {modes}; {len(tools)} tools, cap {args.cap:g} s", flush=True)
        rows: list[dict] = []
        workers = args.parallel or len(tools) or 1
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(run_pair, t, resolve(t) or "", ports, tmp, inputs, args.cap)
                       for t in tools]  # fmt: skip
            for f in futures:
                r = f.result()
                rows.append(r)
                print(f"  {r['tool']}: tarry {r['tarry']['held']:.1f} s, "
                      f"reference {r['reference']['held']:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for p in reversed(STARTED):
            stop(p)
        servers = {p.pid for p in STARTED}
        for p in descendants(os.getpid()):  # orphaned tool helpers reparented to us
            if p not in servers:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        reap()
    print()
    print(table(rows, modes, args.cap))
    print()
    print(summary(rows, args.cap))
    if args.json:
        args.json.write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine(),
             "modes": modes, "tarry_config": cfg, "cap": args.cap,
             "tools": [asdict(t) for t in tools], "rows": rows}, indent=1))  # fmt: skip
    if args.keep:
        print(f"outputs kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if any(r["tarry"]["held"] < r["reference"]["held"] - LESS_MARGIN for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
