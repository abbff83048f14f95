"""The test suites' ports (tests.support.free_port) never collide with what the app and the
kernel hand out themselves (bind(0), outgoing connections): below the ephemeral range,
never twice in a run."""

from __future__ import annotations

import socket

from tests.support import _ephemeral_low, free_port


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < _ephemeral_low() for p in ports)
    with socket.socket() as s:  # and what it hands out is free to bind
        s.bind(("127.0.0.1", ports[-1]))
    with socket.socket() as s:  # unlike what the kernel gives bind(0)
        s.bind(("127.0.0.1", 0))
        assert s.getsockname()[1] >= _ephemeral_low()
