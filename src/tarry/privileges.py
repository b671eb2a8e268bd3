"""Privilege drop for tarry started as root without systemd.

tarry binds its listening sockets as root (port 22 needs it), then becomes an
unprivileged user before it accepts anyone: a bug in code that reads hostile
bytes must not be a root shell. Like systemd's StateDirectory=, the state
directory is created if needed and handed, with what is in it (the history
store, generated TLS keys), to that user first, so it stays usable after the
switch.
"""

from __future__ import annotations

import grp
import os
import pwd
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class PrivilegeError(Exception):
    """tarry cannot run as configured; one line of text."""


@dataclass(frozen=True)
class Target:
    user: str
    uid: int
    gid: int
    group: str


def resolve(user: str, group: str) -> Target:
    """The uid and gid of ``user`` and ``group`` (names or numbers).

    The default group ``nogroup`` is Debian's; where it does not exist (Fedora
    calls it ``nobody``) the user's own primary group stands in for it.
    """
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, name, primary = pw.pw_uid, pw.pw_name, pw.pw_gid
    except KeyError:
        if not user.isdigit():
            raise PrivilegeError(
                f"[privileges] user: no user named {user!r} on this system"
            ) from None
        uid, name, primary = int(user), user, -1
    try:
        gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            gid = int(group)
        elif group == "nogroup" and primary >= 0:
            gid = primary
            group = grp.getgrgid(primary).gr_name if _has_gid(primary) else str(primary)
        else:
            raise PrivilegeError(
                f"[privileges] group: no group named {group!r} on this system"
            ) from None
    return Target(name, uid, gid, group)


def _has_gid(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False


def prepare_state_dir(path: Path, target: Target) -> None:
    """Create tarry's own state directory and give it, and what is in it, to ``target``."""
    try:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
        for root, dirs, files in os.walk(path, followlinks=False):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), target.uid, target.gid, follow_symlinks=False)
        os.chown(path, target.uid, target.gid, follow_symlinks=False)
    except OSError as exc:
        raise PrivilegeError(
            f"state directory {path}: cannot hand it to {target.user}: {exc.strerror or exc}"
        ) from None


def switch(target: Target) -> None:
    """Become ``target`` for good (real, effective and saved ids; only its own groups)."""
    if target.uid == 0:
        raise PrivilegeError(
            f"refusing to run as root: [privileges] user {target.user!r} is root; name an "
            "unprivileged user, or set allow_root = true to mean it"
        )
    try:
        try:
            os.initgroups(target.user, target.gid)
        except OSError:
            os.setgroups([])
        os.setgid(target.gid)
        os.setuid(target.uid)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot switch to {target.user}:{target.group}: {exc.strerror or exc}"
        ) from None
    try:
        os.setuid(0)
    except OSError:
        return
    raise PrivilegeError("the switch did not stick: root could be regained")


def check_writable(directory: Path, who: str) -> None:
    """Say clearly, before running, that the history store could not be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise PrivilegeError(
            f"state directory {directory} is not writable by {who} ({exc.strerror or exc}); "
            "give it to that user, set [history] path, or [history] enabled = false"
        ) from None


def drop(
    user: str,
    group: str,
    allow_root: bool,
    state_dir: Path,
    writable: list[Path],
    modules: Sequence[str] = (),
) -> str | None:
    """When root, hand ``state_dir`` over and switch to ``user``:``group``,
    unless ``allow_root`` says to stay root.

    ``writable`` are directories the process must be able to write to after
    the switch (the history store's). ``modules`` are imported first, as root
    (``preload``): what the config will use, and nothing more, so that an idle
    tarry holds only the libraries it needs. Returns what was done, for the
    log, or None when tarry was not started as root.
    """
    if os.geteuid() != 0:
        for directory in writable:
            check_writable(directory, _whoami())
        return None
    if allow_root:
        return "running as root, as [privileges] allow_root = true says"
    target = resolve(user, group)
    if target.uid != 0:
        prepare_state_dir(state_dir, target)
    preload(modules)
    switch(target)
    # the default state directory of an unprivileged user is under its home:
    # keep the one that was prepared
    os.environ.setdefault("STATE_DIRECTORY", str(state_dir))
    for directory in writable:
        check_writable(directory, f"{target.user}:{target.group}")
    return f"switched to user {target.user} ({target.uid}), group {target.group} ({target.gid})"


# Imported on first use; after the switch the code may no longer be readable
# (e.g. a Python under /root): what a config needs is loaded while still root.
# These are needed by every config (tarry.observe.modules lists the rest).
CORE = (
    "tarry.observe",
    "tarry.sinks",
    "tarry.stats",
    "tarry.events",
    "tarry.cli",
    "tarry.runtime",
    "tarry.config",
    "ctypes",
    "encodings.idna",  # name lookups (aiohttp, uvloop) load it on first use
    "encodings.punycode",
)


def preload(modules: Sequence[str]) -> None:
    """Import ``modules`` and CORE; one that is not installed is skipped (the
    config checks said already whether an optional part can run without it)."""
    import importlib

    for name in (*CORE, *modules):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _whoami() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _can_write(path: Path, directory: bool) -> str | None:
    """Why the current user could not write ``path`` (a file opened for
    appending, or a directory to create files in), or None. Creates nothing."""
    try:
        target = path if directory or path.exists() else path.parent
        while directory and not target.exists() and target != target.parent:
            target = target.parent  # serve creates the missing directories
        mode = os.W_OK | (os.X_OK if target.is_dir() else 0)
    except OSError as exc:  # a directory on the way cannot be searched
        return f"{path} is not writable by {_whoami()} ({exc.strerror or exc})"
    if not os.access(target, mode):
        return f"{path}: {target} is not writable by {_whoami()}"
    return None


def check_writable_as(target: Target | None, files: list[Path], dirs: list[Path]) -> str | None:
    """What ``check-config`` sees of serve's files after the privilege drop: why
    ``target`` (None: the current user) could not append to ``files`` or write
    in ``dirs``, or None. As root, a child process becomes ``target`` to look."""
    if target is None:
        return _first_problem(files, dirs)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: switch for good, look, say, leave
        os.close(read)
        try:
            switch(target)
            problem = _first_problem(files, dirs) or ""
        except PrivilegeError as exc:
            problem = str(exc)
        except BaseException as exc:  # the child must never return into the caller
            problem = f"cannot check as {target.user}: {exc}"
        os.write(write, problem.encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    return said or None


def _first_problem(files: list[Path], dirs: list[Path]) -> str | None:
    for path in files:
        if problem := _can_write(path, False):
            return problem
    for path in dirs:
        if problem := _can_write(path, True):
            return problem
    return None
