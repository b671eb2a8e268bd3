"""The text of ``tarry --help`` and ``tarry COMMAND --help``, written as a man page is:
what the command does, then its files, signals, environment, exit status and
examples. Kept apart from cli.py so the wording can change without touching code."""

from __future__ import annotations

TARRY = """\
tarry holds hostile clients on SSH, HTTP and SMTP ports for as long as they
will stay, at the cost of one file descriptor and about 50 bytes each. Every
connection and every disconnection is logged in endlessh's format, with extra
fields; a history store, Prometheus metrics and a dashboard are optional.
"""

TARRY_EPILOG = """\
commands:
  tarry serve [-c FILE]      run every [[tarpit]] of FILE (or the embedded defaults)
  tarry ssh [endlessh flags] run as a drop-in for endlessh 1.1 (tarry ssh --help)
  tarry check-config FILE    validate FILE and try its listen addresses, then exit
  tarry default-config       print the embedded default configuration
  tarry report [options]     summarise the history store (tarry report --help)

Run `tarry COMMAND --help` for the details of each command.

exit status:
  0  success;  1  a bad config, an address that cannot be bound, or a failed
  privilege drop (one line on stderr says which file, key and problem);
  2  a bad command line

see also:
  docs/deploy.md (systemd, privileges, limits, PROXY protocol), endlessh(1),
  systemd.socket(5), sd_notify(3)
"""

SERVE = """\
Run every [[tarpit]] table of the config file: bind its listen addresses (or
take them from systemd), drop privileges, then hold every client that comes.
Without -c, the embedded defaults run (see `tarry default-config`).

On start, one LISTEN line per listener goes to stdout, then one ACCEPT and one
CLOSE line per client, and TOTALS on exit or on SIGUSR1. Notices (rejected
reloads, clients refused past a cap, bad PROXY headers) go to stderr.
"""

SERVE_EPILOG = """\
configuration (TOML; every key is checked, one line names any mistake):
  [[tarpit]]    protocol, listen, delay, max_clients, jitter, name,
                max_clients_per_ip (64; an IPv6 /64 counts as one address),
                per_ip_action ("close" or "backlog"), proxy_protocol (false),
                proxy_timeout (5 s), and the protocol's own keys
  [limits]      max_clients: clients held across every tarpit (0 = no cap)
  [privileges]  user ("nobody"), group ("nogroup"), allow_root (false)
  [engine]      write_timeout (300 s), loop ("auto", "asyncio", "uvloop")
  [log] [history] [metrics] [geo] [admin]   see the README

signals:
  SIGHUP   re-read the config file: changed delays and limits apply at once,
           new listeners open, removed listeners close and release their
           clients with a CLOSE line; nobody else is dropped. An invalid file
           is rejected with one line on stderr and the old config keeps running.
  SIGUSR1  log a TOTALS line
  SIGTERM, SIGINT
           close every client (a CLOSE line each), log TOTALS, exit 0

privileges:
  Started as root, tarry binds its listeners, creates the state directory and
  hands it to [privileges] user, then becomes that user and group before it
  accepts anyone. It refuses to stay root unless allow_root = true.

systemd:
  Socket activation: a passed socket goes to the [[tarpit]] whose name equals
  its FileDescriptorName= (its addresses then replace the tarpit's listen
  list), else to the tarpit that lists its address. tarry sends READY=1,
  STATUS=, RELOADING=1, STOPPING=1, and WATCHDOG=1 when WatchdogSec= is set.
  Units: contrib/systemd/.

environment:
  LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES   sockets passed by systemd
  NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID   sd_notify(3)
  STATE_DIRECTORY   the state directory (set by systemd's StateDirectory=)
  XDG_STATE_HOME    else $XDG_STATE_HOME/tarry; else /var/lib/tarry as root,
                    ~/.local/state/tarry otherwise

files:
  /etc/tarry/tarry.toml         the usual place for the config file
  STATE_DIRECTORY/history.sqlite3   the history store ([history] path), or a
                    fleet's shared PostgreSQL ([history] url, docs/fleet.md)

exit status:
  0 after SIGTERM or SIGINT; 1 when the config, a bind, the socket activation
  or the privilege drop fails (one line on stderr)

examples:
  tarry default-config > /etc/tarry/tarry.toml
  tarry check-config /etc/tarry/tarry.toml && tarry serve -c /etc/tarry/tarry.toml
  systemd-socket-activate -l 22 --fdname=ssh tarry serve -c tarry.toml
"""

CHECK = """\
Run the checks `tarry serve -c FILE` runs before it holds anyone, in the
same code: read FILE, build every bait, look up the [privileges] user and
group (as root), open the [geo] database, and bind each listen address and
the [admin] one once (then close it again), so that
a mistake shows before a reload or a restart. Binding ports below 1024 needs
the privileges that serving them does; addresses a running tarry (or systemd)
listens on are busy, so check those with --no-bind.
"""

CHECK_EPILOG = """\
exit status:
  0  FILE is good ("FILE: OK, N tarpit(s)" on stdout); a taken default
     dashboard address is a warning on stderr, as with serve
  1  it is not: one line on stderr names the file, the key and the problem

example:
  tarry check-config --no-bind /etc/tarry/tarry.toml && systemctl reload tarry
"""

DEFAULT = """\
Print the embedded default configuration: the config `tarry serve` runs
without -c, with every section and its defaults, commented. A starting
point for /etc/tarry/tarry.toml.
"""

DEFAULT_EPILOG = """\
example:
  tarry default-config > /etc/tarry/tarry.toml
"""

SSH_EXTRA = """\

tarry ssh behaves as endlessh 1.1 does: the same flags, the same config file
(/etc/endlessh/config: Port, Delay, MaxLineLength, MaxClients, BindFamily,
LogLevel), the same log lines, SIGHUP to re-read the config file (held
clients are kept, even when the port changes) and SIGUSR1 for TOTALS. It
has no per-IP cap, no privilege drop and no socket activation, as endlessh
has none; `tarry serve` has all three.

  --syslog-ident NAME  the syslog tag with -s [endlessh]: lines are
                       NAME[pid] on the daemon facility, settings included
  -f FILE              a missing or unreadable FILE is warned about on stderr
                       and the other settings run, as in endlessh

exit status: 0 on SIGTERM, 1 on a bad flag or value, or a bad line in the config file.
"""
