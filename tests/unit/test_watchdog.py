"""The database watchdog wakes only when a new deadline is sooner than its next look (#17), and
still cuts a short call that starts while a long one is guarded."""

from __future__ import annotations

import socket
import threading
import time

from regcast.jobs._db import Watchdog


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


def test_a_short_deadline_is_cut_while_a_long_one_is_guarded() -> None:
    dog = Watchdog()
    long_held, release = threading.Event(), threading.Event()

    def long_call() -> None:
        with dog.guard(3600):
            long_held.set()
            release.wait(60)

    t = threading.Thread(target=long_call)
    t.start()
    a, b = socket.socketpair()
    try:
        assert long_held.wait(60)
        with dog.guard(0.05) as g:
            dog.attach(_Conn(a))
            a.settimeout(60)
            data = a.recv(1)  # blocks until the watchdog shuts the socket down: then b"" at once
            assert g.fired
            assert data == b""
    finally:
        release.set()
        t.join(60)
        dog.close()
        a.close()
        b.close()


def test_guards_are_released() -> None:
    dog = Watchdog()
    for _ in range(3):
        with dog.guard(3600):
            pass
    time.sleep(0)
    assert not dog._guards
    dog.close()
