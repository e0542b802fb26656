# SPDX-License-Identifier: GPL-3.0-or-later
"""The probe agent's HTTP answers, over a socket pair (no network)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import probe_agent


def ask(raw, peer=("10.244.1.5", 40123), name="node1-pod-1"):
    ours, theirs = socket.socketpair()
    try:
        ours.sendall(raw)
        ours.shutdown(socket.SHUT_WR)
        probe_agent.handle_connection(theirs, peer, name)
        data = b""
        while True:
            chunk = ours.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        ours.close()
    head, _sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Connection"] == "close"
    return lines[0], body.decode("utf-8")


def test_hostname_clientip_and_json_like_agnhost():
    assert ask(b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n") == ("HTTP/1.0 200 OK", "node1-pod-1")
    assert ask(b"GET /clientip HTTP/1.0\r\n\r\n") == ("HTTP/1.0 200 OK", "10.244.1.5:40123")
    assert ask(b"GET /clientip HTTP/1.0\r\n\r\n", peer=("::ffff:10.244.1.5", 1, 0, 0)) == (
        "HTTP/1.0 200 OK", "10.244.1.5:1")
    assert ask(b"GET /clientip HTTP/1.0\r\n\r\n", peer=("fd00::5", 7, 0, 0)) == ("HTTP/1.0 200 OK", "[fd00::5]:7")
    status, body = ask(b"GET /?x=1 HTTP/1.0\r\n\r\n")
    assert status == "HTTP/1.0 200 OK"
    assert json.loads(body) == {"name": "node1-pod-1", "client_ip": "10.244.1.5"}
    assert ask(b"GET /HOSTNAME/ HTTP/1.0\n\n")[1] == "node1-pod-1"  # bare LF, case, trailing slash


@pytest.mark.parametrize("raw,status", [
    (b"GET /nope HTTP/1.0\r\n\r\n", "HTTP/1.0 404 Not Found"),
    (b"POST /hostname HTTP/1.0\r\n\r\n", "HTTP/1.0 405 Method Not Allowed"),
    (b"garbage\r\n\r\n", "HTTP/1.0 400 Bad Request"),
    (b"", "HTTP/1.0 400 Bad Request"),
    (b"\x00\x01 \x02\r\n\r\n", "HTTP/1.0 400 Bad Request"),
])
def test_anything_else_gets_an_error_status_and_the_agent_goes_on(raw, status):
    assert ask(raw)[0] == status


def test_a_caller_that_vanishes_does_not_raise():
    ours, theirs = socket.socketpair()
    ours.close()
    probe_agent.handle_connection(theirs, ("10.0.0.1", 1), "p")  # no exception


def test_the_agent_imports_no_heavy_module():
    # One agent per pod: http.server (ssl, email, http.client) tripled each agent's start-up.
    code = ("import sys; sys.argv = ['agent']; import runpy; "
            f"runpy.run_path({probe_agent.__file__!r}, run_name='not_main'); "
            "print(','.join(sorted(m for m in ('http.server', 'ssl', 'email', 'socketserver') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
