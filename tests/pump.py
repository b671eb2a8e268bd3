"""A tiny test-only server loop for one bait on 127.0.0.1, in a thread, so that
real client libraries can talk to a bait before (and apart from) the engine."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Any

from tarry.bait import Bait, Step


class _Client:
    __slots__ = ("due", "notes", "obj", "sock", "start", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.start = time.monotonic()
        self.state = 0
        self.obj: Any = None
        self.due: float | None = None
        self.notes: dict[str, str] = {}


class Pump(threading.Thread):
    def __init__(self, bait: Bait) -> None:
        super().__init__(daemon=True)
        self.bait = bait
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.server, selectors.EVENT_READ)
        self.clients: dict[int, _Client] = {}
        self.closed: list[dict[str, str]] = []  # notes of each finished client
        self.done = threading.Event()

    def __enter__(self) -> Pump:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(5)
        for c in list(self.clients.values()):
            c.sock.close()
        self.server.close()

    def _apply(self, c: _Client, s: Step) -> None:
        c.state, c.obj = s.state, s.obj
        c.notes.update(s.notes or ())
        if s.delay is not None:
            c.due = time.monotonic() + s.delay
        if s.out:
            try:
                c.sock.sendall(s.out)
            except OSError:
                self._close(c)
                return
        if s.close:
            self._close(c)

    def _close(self, c: _Client) -> None:
        if self.clients.pop(c.sock.fileno(), None) is not None:
            self.sel.unregister(c.sock)
            c.sock.close()
            self.closed.append(c.notes)

    def run(self) -> None:
        while not self.done.is_set():
            now = time.monotonic()
            dues = [c.due for c in self.clients.values() if c.due is not None]
            timeout = min([0.05, *[max(0.0, d - now) for d in dues]])
            for key, _ in self.sel.select(timeout):
                if key.fileobj is self.server:
                    try:
                        sock, addr = self.server.accept()
                    except BlockingIOError:
                        continue
                    sock.settimeout(5)
                    c = _Client(sock)
                    self.clients[sock.fileno()] = c
                    self.sel.register(sock, selectors.EVENT_READ)
                    self._apply(c, self.bait.open(addr[0]))
                    continue
                c = self.clients.get(key.fd)
                if c is None:
                    continue
                try:
                    data = c.sock.recv(16384)
                except OSError:
                    data = b""
                if not data:
                    self._close(c)
                    continue
                self._apply(c, self.bait.feed(c.state, c.obj, data, time.monotonic() - c.start))
            now = time.monotonic()
            for c in list(self.clients.values()):
                if c.due is not None and c.due <= now and c.sock.fileno() in self.clients:
                    c.due = None
                    self._apply(c, self.bait.tick(c.state, c.obj, now - c.start))
