"""Benchmark tarry against the naive asyncio tarpit, both measured in the same run on this machine.

For each server: start it, take its idle RSS/PSS, hold N clients with bench/loadgen.py, and report
time to accept N, userland bytes per held client (RSS and PSS delta / clients held), CPU seconds
over a hold window (scaled to 60 s) and per line sent, and the clients still held at the end.
Every figure comes from /proc/PID of the server, so both servers are measured the same way.

Usage: python bench/run.py [-n 10000] [--window 60] [--delay 10] [--servers tarry,endlessh,reference]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTED: list[subprocess.Popen] = []  # every process this runner started, to end by PID


class BenchError(Exception):
    pass


# --- /proc readers ---------------------------------------------------------------------------


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, from smaps_rollup."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "Rss":
            rss = int(rest.split()[0]) * 1024
        elif key == "Pss":
            pss = int(rest.split()[0]) * 1024
    return rss, pss


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of the whole process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


# The kernel's objects for one held TCP socket and its registration (a server
# that watches its clients with epoll pays eventpoll_*; endlessh polls).
SLABS = (
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
    "eventpoll_pwq",
)


def slab_bytes() -> int | None:
    """Bytes in use in the SLABS caches, machine-wide (None without /proc/slabinfo, or not
    root). Whole slabs are not counted, only objects: what each socket costs, not rounding."""
    try:
        lines = Path("/proc/slabinfo").read_text().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        f = line.split()
        if f and f[0] in SLABS:
            total += int(f[1]) * int(f[3])  # active_objs * objsize
    return total


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (tarry's workers)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(name))
    return sorted(out)


class Tree:
    """A server as one process or as a supervisor and its workers: every figure
    is summed over all of them."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pids = [pid, *children(pid)]

    def memory(self) -> tuple[int, int]:
        rss = pss = 0
        for p in self.pids:
            r, q = memory(p)
            rss, pss = rss + r, pss + q
        return rss, pss

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    def cpu_split(self) -> tuple[float, float]:
        each = [cpu_split(p) for p in self.pids]
        return sum(u for u, _ in each), sum(s for _, s in each)

    def fds(self) -> int:
        return sum(fd_count(p) for p in self.pids)

    def save_smaps(self, where: Path | None, label: str) -> None:
        """Keep each process's /proc/PID/smaps as WHERE/LABEL-PID (see smapsdiff.py)."""
        if where is None:
            return
        where.mkdir(parents=True, exist_ok=True)
        for p in self.pids:
            (where / f"{label}-{p}").write_text(Path(f"/proc/{p}/smaps").read_text())

    def each(self) -> list[dict]:
        out = []
        for p in self.pids:
            rss, pss = memory(p)
            out.append(
                {"pid": p, "rss": rss, "pss": pss, "fds": fd_count(p), "cpu": cpu_seconds(p)}
            )
        return out


# --- processes -------------------------------------------------------------------------------


def start(cmd: list[str], **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, **kw)
    STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """SIGTERM this process (by PID), then SIGKILL if it does not go in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(
    cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class LoadGen:
    """bench/loadgen.py as a child; its JSON lines arrive on a queue from a reader thread."""

    def __init__(
        self,
        port: int,
        n: int,
        procs: int,
        src_first: str,
        hold: float,
        payload: str = "ssh",
        per_src: int = 10000,
        connect_timeout: float = 60.0,
        rate: float = 50000,
    ) -> None:
        cmd = [
            sys.executable,
            str(BENCH / "loadgen.py"),
            "--payload",
            payload,
            "--port",
            str(port),
            "-n",
            str(n),
            "--procs",
            str(procs),
            "--src-first",
            src_first,
            "--hold",
            str(hold),
            "--per-src",
            str(per_src),
            "--connect-timeout",
            str(connect_timeout),
            "--rate",
            str(rate),
        ]
        self.proc = start(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.early: dict[str, dict] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                print(f"  loadgen: {line.rstrip()}", file=sys.stderr)
        self.lines.put({"event": "eof"})

    def seen(self, event: str) -> dict | None:
        """A report that has come already (kept for ``expect``), without waiting."""
        while True:
            try:
                msg = self.lines.get_nowait()
            except queue.Empty:
                return self.early.get(event)
            self.early[msg.get("event", "")] = msg

    def expect(self, event: str, timeout: float) -> dict:
        if event in self.early:
            return self.early.pop(event)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out waiting for loadgen's {event!r} report")
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if msg.get("event") == event:
                return msg
            if msg.get("event") in ("eof", "error"):
                raise BenchError(f"loadgen ended before its {event!r} report: {msg}")

    def status(self) -> dict:
        self.proc.send_signal(signal.SIGUSR1)
        return self.expect("status", 30)


# --- servers ---------------------------------------------------------------------------------


def python(args: argparse.Namespace) -> list[str]:
    """The interpreter, through bench/trim.py unless --no-trim."""
    return [sys.executable] + ([] if args.no_trim else [str(BENCH / "trim.py")])


def trim(tree: Tree, log: Path) -> None:
    """Have the server (each of its processes) hand its free heap pages back (see
    trim.py) and wait until it has; forked workers inherit the handler."""
    mark = "BENCH-TRIMMED"
    before = log.read_text().count(mark)
    for pid in tree.pids:
        os.kill(pid, signal.SIGUSR2)
    wait_until(
        lambda: log.read_text().count(mark) >= before + len(tree.pids), 10, "the server's heap trim"
    )
    time.sleep(0.2)


def start_tarry(args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen, Path, str]:
    cfg = tmp / "tarry.toml"
    extra = os.environ.get("BENCH_EXTRA_TOML", "")
    cfg.write_text(
        "[[tarpit]]\n"
        f'protocol = "{args.proto}"\n'
        'listen = ["127.0.0.1:0"]\n'
        f"delay = {float(args.delay)!r}\n"
        f"max_clients = {args.n + 100}\n"
        # the load comes from a few source addresses: count per address, never cap
        "max_clients_per_ip = 65535\n"
        + (
            f'mode = "{args.ssh_mode}"\n'
            if args.proto == "ssh" and args.ssh_mode != "banner"
            else ""
        )
        + extra
        + "\n"
        # measure the process as it ran before privilege dropping existed
        + ("" if "[privileges]" in extra else "[privileges]\nallow_root = true\n")
        + (
            ""
            if "[engine]" in extra
            else f'[engine]\nloop = "{args.loop}"\n'
            + (f"workers = {args.workers}\n" if args.workers else "")
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    # an empty history store in every run: one that earlier runs filled makes the
    # dashboard's start-up queries grow the heap after the idle baseline
    env.setdefault("XDG_STATE_HOME", str(tmp))
    cmd = [*python(args), "-m", "tarry", "serve", "-c", str(cfg)]
    log = tmp / "tarry.log"
    with open(log, "w") as out:
        proc = start(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    return proc, log, r"LISTEN .*listener=127\.0\.0\.1:(\d+)"


def start_reference(args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen, Path, str]:
    cmd = [*python(args), str(BENCH / "reference_asyncio.py"), "0", str(args.delay)]
    log = tmp / "reference.log"
    with open(log, "w") as out:
        proc = start(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    return proc, log, r"LISTEN 127\.0\.0\.1:(\d+)"


def free_port_below_ephemeral() -> int:
    """A free port under the kernel's ephemeral range, which the load generator's
    tens of thousands of connections use up (a port 0 bind would pick from it)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(20000, low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise BenchError("no free port for endlessh")


def start_endlessh(args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen, Path, str]:
    """Debian's endlessh 1.1 (scripts/install-test-deps.sh installs it), banner mode."""
    exe = shutil.which("endlessh")
    if exe is None:
        raise BenchError("endlessh is not installed (apt-get install endlessh)")
    if args.proto != "ssh":
        raise BenchError("endlessh speaks SSH only: use --proto ssh")
    port = free_port_below_ephemeral()  # endlessh takes no port 0
    delay_ms = str(int(args.delay * 1000))
    cmd = [exe, "-v", "-4", "-p", str(port), "-d", delay_ms, "-m", str(args.n + 100)]
    log = tmp / "endlessh.log"
    (tmp / "config").write_text("")  # not /etc/endlessh/config
    with open(log, "w") as out:
        proc = start([*cmd, "-f", str(tmp / "config")], stdout=out, stderr=subprocess.STDOUT)
    return proc, log, r"Port (\d+)"


SERVERS = {"tarry": start_tarry, "reference": start_reference, "endlessh": start_endlessh}
PYTHON_SERVERS = ("tarry", "reference")


def listening_port(proc: subprocess.Popen, log: Path, pattern: str) -> int:
    def port() -> int | None:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:]
            raise BenchError(f"server exited with {proc.returncode} before listening:\n{tail}")
        m = re.search(pattern, log.read_text())
        return int(m.group(1)) if m else None

    return int(wait_until(port, 30, "the server's LISTEN line"))  # type: ignore[arg-type]


def measure(name: str, index: int, args: argparse.Namespace) -> dict:
    n = args.n
    res: dict = {"server": name, "n": n}
    with tempfile.TemporaryDirectory(prefix=f"tarry-bench-{name}-") as tmpdir:
        proc, log, pattern = SERVERS[name](args, Path(tmpdir))
        loadgen = None
        try:
            port = listening_port(proc, log, pattern)
            pid = proc.pid
            if name == "tarry" and args.workers > 1:
                wait_until(
                    lambda: log.read_text().count("started (pid") >= args.workers,
                    60,
                    "the workers",
                )
            time.sleep(1.0)  # let start-up settle before the baseline
            tree = Tree(pid)
            res["rss_idle_untrimmed"], res["pss_idle_untrimmed"] = tree.memory()
            python_server = name in PYTHON_SERVERS  # endlessh is C: nothing to trim
            if python_server and not args.no_trim:
                trim(tree, log)
            fds0 = tree.fds()
            rss0, pss0 = tree.memory()
            res.update(pid=pid, pids=tree.pids, port=port, rss_idle=rss0, pss_idle=pss0)
            res["idle_each"] = tree.each()
            slab0 = slab_bytes()
            tree.save_smaps(args.smaps, "idle")
            print(
                f"[{name}] pid {pid} ({len(tree.pids)} processes) listening on 127.0.0.1:{port},"
                f" idle RSS {rss0 / 2**20:.1f} MiB; connecting {n} clients",
                flush=True,
            )

            hold = args.settle + args.window + 300  # loadgen's own bound; we stop it sooner
            loadgen = LoadGen(
                port,
                n,
                args.procs,
                f"127.{10 + index}.0.1",
                hold,
                args.proto,
                per_src=args.per_src,
                connect_timeout=args.connect_timeout,
                rate=args.rate,
            )
            t_first = loadgen.expect("start", 60)["t"]
            # The fd count covers both servers alike: one socket per held client, nothing else.
            t_all: float | None = None
            half: tuple[int, int, int] | None = None  # (held, RSS, PSS) once N/2 are held
            deadline = time.monotonic() + args.connect_timeout
            # listing many fds costs CPU the server needs
            poll = 0.01 if n <= 20000 else 0.25 if n <= 250000 else 5.0
            last, changed = -1, time.monotonic()
            while time.monotonic() < deadline:
                held = tree.fds() - fds0
                if held >= n:
                    t_all = time.monotonic()
                    break
                if held != last:
                    last, changed = held, time.monotonic()
                elif loadgen.seen("connected") is not None and time.monotonic() - changed > 15.0:
                    # every connect is done and the count stopped for 15 s: some failed (JSON).
                    # Not sooner: a connection the client sees as complete may still wait
                    # for the server, whose full accept queue dropped the handshake's last
                    # ACK; its SYN-ACK is then retried after 1, 2, 4, 8 s (the reference's
                    # queue is 100 long).
                    break
                if half is None and held >= n // 2:
                    half = (held, *tree.memory())
                if proc.poll() is not None:
                    raise BenchError(f"{name} exited with {proc.returncode} while accepting")
                time.sleep(poll)
            connected = loadgen.expect("connected", args.connect_timeout + 60)
            res["accept_seconds"] = None if t_all is None else t_all - t_first
            res["loadgen_connected"] = connected["connected"]
            res["loadgen_connect_seconds"] = connected["t"] - t_first
            res["held_after_accept"] = tree.fds() - fds0
            accept_s = "not all" if t_all is None else f"{t_all - t_first:.2f} s"
            print(
                f"[{name}] accepted {res['held_after_accept']}/{n} ({accept_s});"
                f" settling {args.settle:g} s",
                flush=True,
            )
            time.sleep(0.5)
            res["rss_after_accept"], res["pss_after_accept"] = tree.memory()

            time.sleep(max(0.0, (t_all or time.monotonic()) + args.settle - time.monotonic()))
            if Tree(pid).pids != tree.pids:
                raise BenchError(f"{name}: a worker was replaced while accepting")
            user0, sys0 = tree.cpu_split()
            cpu0 = user0 + sys0
            cpu0_sup = cpu_seconds(pid)
            w0 = time.monotonic()
            lines0 = loadgen.status()["lines"]
            res["rss_window_start"], res["pss_window_start"] = tree.memory()
            print(f"[{name}] holding for a {args.window:g} s window", flush=True)
            time.sleep(max(0.0, w0 + args.window - time.monotonic()))
            user1, sys1 = tree.cpu_split()
            cpu1 = user1 + sys1
            cpu1_sup = cpu_seconds(pid)
            w1 = time.monotonic()
            lines1 = loadgen.status()["lines"]
            rss1, pss1 = tree.memory()
            held = tree.fds() - fds0
            res["end_each"] = tree.each()
            tree.save_smaps(args.smaps, "end")
            if args.trim_end and python_server and not args.no_trim:
                # what stays once freed heap (buffers of the accept burst) goes back
                trim(tree, log)
                res["rss_end_trimmed"], res["pss_end_trimmed"] = tree.memory()
                res["end_each_trimmed"] = tree.each()
                tree.save_smaps(args.smaps, "trimmed")
                res["rss_per_client_trimmed"] = (res["rss_end_trimmed"] - rss0) / held
                print(
                    f"[{name}] after a heap trim at the end: "
                    f"{res['rss_per_client_trimmed']:.0f} B/client RSS",
                    flush=True,
                )
            res["cpu_supervisor"] = cpu1_sup - cpu0_sup if len(tree.pids) > 1 else None

            window = w1 - w0
            res.update(
                window_seconds=window,
                cpu_seconds=cpu1 - cpu0,
                cpu_per_60s=(cpu1 - cpu0) * 60 / window,
                user_per_60s=(user1 - user0) * 60 / window,
                sys_per_60s=(sys1 - sys0) * 60 / window,
                lines_nominal=n * window / args.delay,
                lines_received=lines1 - lines0,
                rss_end=rss1,
                pss_end=pss1,
                held_end=held,
            )
            res["rss_per_client"] = (rss1 - rss0) / held if held > 0 else None
            res["pss_per_client"] = (pss1 - pss0) / held if held > 0 else None
            # The cost of the second half of the clients: start-up leaves freed heap resident,
            # which the first clients' memory can reuse unseen by the idle-to-held delta.
            res["held_half"] = half[0] if half else None
            res["rss_half"], res["pss_half"] = (half[1], half[2]) if half else (None, None)
            marginal = half is not None and held > half[0]
            res["rss_marginal"] = (rss1 - half[1]) / (held - half[0]) if marginal else None
            res["pss_marginal"] = (pss1 - half[2]) / (held - half[0]) if marginal else None
            res["us_per_line"] = (cpu1 - cpu0) / res["lines_nominal"] * 1e6
            if name == "tarry":
                # tarry logs a CLOSE line for every client it let go, and why
                closes = re.findall(r"CLOSE .*", log.read_text(errors="replace"))
                res["server_closes"] = closes[:20]
                if closes:
                    print(f"[{name}] {len(closes)} clients closed before the end:", flush=True)
                    print("\n".join(closes[:5]), flush=True)
            res["kernel_per_client"] = res["client_kernel_per_client"] = None
            slab1 = slab_bytes()
            if slab0 is not None and slab1 is not None and held > 0:
                # the server's share: what goes when it lets go while every client
                # stays (the load generator is stopped, so it cannot close its ends)
                clients = Tree(loadgen.proc.pid).pids
                for p in clients:
                    os.kill(p, signal.SIGSTOP)
                try:
                    stop(proc)
                    time.sleep(3.0)  # sockets are freed after an RCU grace period
                    slab2 = slab_bytes()
                finally:
                    for p in clients:
                        os.kill(p, signal.SIGCONT)
                assert slab2 is not None
                res["kernel_per_client"] = (slab1 - slab2) / held
                res["client_kernel_per_client"] = (slab2 - slab0) / held
                print(
                    f"[{name}] kernel bytes per held client: {res['kernel_per_client']:,.0f}"
                    f" server side, {res['client_kernel_per_client']:,.0f} client side",
                    flush=True,
                )
            loadgen.proc.send_signal(signal.SIGTERM)
            final = loadgen.expect("final", 60)
            res["loadgen_open_end"] = final["open"]
            res["loadgen_closed_by_server"] = final["closed_by_server"]
            print(f"[{name}] done: {held} held at the end, CPU {cpu1 - cpu0:.2f} s", flush=True)
        finally:
            if loadgen is not None:
                stop(loadgen.proc)
            stop(proc)
    return res


# --- report ----------------------------------------------------------------------------------


def fmt(v: object, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def total_per_client(r: dict) -> float | None:
    """Userland (RSS) plus the server side's kernel objects."""
    if r.get("rss_per_client") is None or r.get("kernel_per_client") is None:
        return None
    return r["rss_per_client"] + r["kernel_per_client"]


def table(results: list[dict], args: argparse.Namespace) -> str:
    head = (
        "server",
        "held end",
        "accept N",
        "RSS B/client",
        "PSS B/client",
        "RSS B/client N/2..N",
        "kernel B/client",
        "total B/client",
        "CPU s/60s",
        "user+sys",
        "µs/line",
        "idle RSS MiB",
    )
    rows = [head]
    for r in results:
        rows.append(
            (
                r["server"],
                f"{r['held_end']}/{r['n']}",
                "n/a" if r["accept_seconds"] is None else f"{r['accept_seconds']:.2f} s",
                fmt(r["rss_per_client"], ",.0f"),
                fmt(r["pss_per_client"], ",.0f"),
                fmt(r["rss_marginal"], ",.0f"),
                fmt(r.get("kernel_per_client"), ",.0f"),
                fmt(total_per_client(r), ",.0f"),
                f"{r['cpu_per_60s']:.2f}",
                f"{r['user_per_60s']:.2f}+{r['sys_per_60s']:.2f}",
                f"{r['us_per_line']:.1f}",
                f"{r['rss_idle'] / 2**20:.1f}",
            )
        )
    by = {r["server"]: r for r in results}
    for base in ("endlessh", "reference"):
        if "tarry" not in by or base not in by:
            continue
        t, ref = by["tarry"], by[base]
        for r in (t, ref):
            r["total_per_client"] = total_per_client(r)

        def ratio(key: str, t: dict = t, ref: dict = ref) -> str:
            a, b = t.get(key), ref.get(key)
            return "n/a" if a is None or not b else f"{a / b:.2f}x"

        rows.append(
            (
                f"tarry/{base}",
                "",
                ratio("accept_seconds"),
                ratio("rss_per_client"),
                ratio("pss_per_client"),
                ratio("rss_marginal"),
                ratio("kernel_per_client"),
                ratio("total_per_client"),
                ratio("cpu_per_60s"),
                "",
                ratio("us_per_line"),
                "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = []
    for k, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def machine() -> dict:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "rlimit_nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "commit": commit,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=10000, help="clients to hold (default 10000)")
    p.add_argument("--window", type=float, default=60.0, help="CPU hold window, seconds")
    p.add_argument("--delay", type=float, default=10.0, help="seconds between lines")
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds between accepting N and the window (default: delay + 1)",
    )
    p.add_argument(
        "--servers",
        default="tarry,endlessh,reference",
        help="comma-separated, in order: tarry, endlessh (Debian's endlessh 1.1), reference"
        " (the asyncio tarpit); name them twice to interleave, e.g. tarry,endlessh,tarry,endlessh",
    )
    p.add_argument(
        "--proto",
        choices=["ssh", "http", "redis", "mysql", "postgresql"],
        default="ssh",
        help="tarry's tarpit, and what each client sends on connect (the reference ignores it)",
    )
    p.add_argument(
        "--ssh-mode",
        default="banner",
        choices=("banner", "drip", "kex", "adaptive"),
        help="tarry's SSH mode with --proto ssh (docs/ssh-modes.md); the reference is banner",
    )
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "auto"],
        default="asyncio",
        help="tarry's [engine] loop (uvloop needs tarry[fast])",
    )
    p.add_argument("--procs", type=int, default=0, help="loadgen processes (0: as needed)")
    p.add_argument("--rate", type=float, default=50000, help="loadgen connects per second, in all")
    p.add_argument(
        "--spread",
        action="store_true",
        help="pace the connects so the arrivals cover one delay (--rate N/delay): every server "
        "then sends its lines evenly over time, as with clients that arrive over time, "
        "instead of in one burst a delay after a burst of connects",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="tarry's [engine] workers (0: not set, one process); figures are summed over "
        "the supervisor and its workers",
    )
    p.add_argument(
        "--per-src",
        type=int,
        default=10000,
        help="loadgen connections per source address (workers are chosen by source "
        "address: use a few, e.g. 10, to spread clients over them)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the server to hold N",
    )
    p.add_argument(
        "--no-trim",
        action="store_true",
        help="take the idle baseline without trimming the server's heap first (see trim.py)",
    )
    p.add_argument(
        "--trim-end",
        action="store_true",
        help="after the window, trim the server's heap again and report RSS per client then"
        " too (what the held clients keep, without the accept burst's freed buffers)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    p.add_argument(
        "--smaps",
        metavar="DIR",
        type=Path,
        help="save every server process's /proc/PID/smaps at idle and at the end into DIR,"
        " to see where the memory went: python bench/smapsdiff.py DIR",
    )
    args = p.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown or not args.servers:
        p.error(f"--servers: choose from {', '.join(SERVERS)}")
    if args.n < 1 or args.window <= 0 or args.delay <= 0:
        p.error("-n, --window and --delay must be positive")
    if args.settle is None:
        args.settle = args.delay + 1
    if args.spread:
        args.rate = args.n / args.delay
        args.connect_timeout = max(args.connect_timeout, args.delay * 1.5 + 30)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks clean up
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    info = machine()
    print(f"command: {command}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    results, failed = [], []
    try:
        for i, name in enumerate(args.servers):
            try:
                results.append(measure(name, i, args))
            except BenchError as e:  # report it, and still measure the others
                print(f"[{name}] failed: {e}", file=sys.stderr, flush=True)
                failed.append(name)
    finally:
        for proc in STARTED:
            stop(proc, 10)
    print()
    if not results:
        return 1
    print(
        f"{args.n} clients, a line every {args.delay:g} s, CPU over a {args.window:g} s window"
        " (scaled to 60 s); bytes per client = (RSS or PSS held - idle) / clients held"
    )
    print(table(results, args))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"command": command, "machine": info, "results": results, "failed": failed},
                indent=2,
            )
            + "\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
