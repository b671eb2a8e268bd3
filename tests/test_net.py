"""Addresses without an engine: what config checks and socket activation use."""

from __future__ import annotations

import socket

import pytest

from tarry.net import BindError, bind_listener, format_address, parse_address, unmapped


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("*:22", ("*", 22)),
        (":8080", ("*", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:2222", ("::1", 2222)),
    ],
)
def test_parse(text, want):
    assert parse_address(text) == want


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("2222", "host:port"),
        ("::1:22", "in brackets"),
        ("[1.2.3.4]:22", "only for IPv6"),
        ("example.com:22", "not an IP address"),
        ("1.2.3.4:65536", "not a number from 0 to 65535"),
    ],
)
def test_parse_errors_say_why(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_address(text)


def test_unmapped_is_the_one_ipv4_mapped_rule():
    assert unmapped("::ffff:192.0.2.1") == "192.0.2.1"
    assert unmapped("::ffff:c000:201") == "::ffff:c000:201"  # no dotted quad: left alone
    assert unmapped("2001:db8::1") == "2001:db8::1"
    assert unmapped("192.0.2.1") == "192.0.2.1"


def test_a_busy_port_is_one_line():
    with bind_listener("127.0.0.1:0") as busy:
        port = busy.getsockname()[1]
        with pytest.raises(BindError, match=f"127.0.0.1:{port}: address already in use"):
            bind_listener(f"127.0.0.1:{port}")
    assert format_address(socket.AF_INET6, "::1", 22) == "[::1]:22"
