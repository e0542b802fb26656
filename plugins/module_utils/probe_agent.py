# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe agent that flatnet.cluster's verification runs inside every pod.

It plays the part of Kubernetes' ``agnhost netexec`` endpoint, with the standard library only:

- HTTP (threaded): ``GET /hostname`` → the pod name; ``GET /clientip`` → the caller's address
  as ``IP:PORT`` (``[IP]:PORT`` for IPv6, like agnhost and Go's RemoteAddr);
  ``GET /`` → JSON ``{"name": ..., "client_ip": ...}`` where client_ip is the bare IP.
- UDP: any datagram → one reply ``NAME CLIENT_IP`` (bare IP).

IPv4-mapped IPv6 addresses (``::ffff:10.244.0.2``, seen on a dual-stack socket) are always
reported as plain IPv4, so the caller can compare them with its pod IP.

Run as a script: ``python3 probe_agent.py --name POD --http-port 8083 --udp-port 8081
[--bind ADDR] [--lifetime SECONDS]``. Without ``--bind`` it listens on every address of both
families when the namespace has IPv6, else on every IPv4 address. With ``--lifetime`` it exits
by itself that many seconds after it started, so an agent whose verification was interrupted
(Ctrl-C, a killed ansible-playbook: the role's cleanup never ran) does not listen forever.

This file is also imported by the ``probe_agents`` module, which writes ``agent_source()``
to the node: keep it free of any import outside the standard library. It serves HTTP with a
plain socket rather than ``http.server``, which imports ssl, email and http.client: a node
starts one agent per pod, and those imports tripled each agent's start-up CPU (60 ms against
20) and doubled its memory (18 MB against 9).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time


def plain_ip(host):
    """The caller's IP as the receiver should report it (IPv4-mapped IPv6 unwrapped)."""
    host = host.split("%", 1)[0]
    if host.lower().startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def host_port(host, port):
    ip = plain_ip(host)
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _families(bind):
    """(family, address) to listen on: the bind address, else dual-stack '::' or '0.0.0.0'."""
    if bind:
        return (socket.AF_INET6 if ":" in bind else socket.AF_INET), bind
    if socket.has_ipv6:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.close()
            return socket.AF_INET6, "::"
        except OSError:
            # IPv6 disabled in the pod namespace (ipv6.disable or disable_ipv6 on all).
            pass
    return socket.AF_INET, "0.0.0.0"


def _dual_stack(sock, family, address):
    if family == socket.AF_INET6 and address == "::":
        # Accept IPv4 callers too; they show up as ::ffff:a.b.c.d and are unwrapped.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


MAX_REQUEST = 8192  # bytes of request head read before answering 400
REQUEST_TIMEOUT = 5.0  # seconds a caller has to send its request head


def answer(name, method, path, host, port):
    """(status, content type, body) of the agent for one request."""
    if method != "GET":
        return 405, "text/plain; charset=utf-8", "only GET\n"
    path = path.split("?", 1)[0].rstrip("/").lower() or "/"
    if path == "/hostname":
        return 200, "text/plain; charset=utf-8", name
    if path == "/clientip":
        return 200, "text/plain; charset=utf-8", host_port(host, port)
    if path == "/":
        return 200, "application/json", json.dumps({"name": name, "client_ip": plain_ip(host)})
    return 404, "text/plain; charset=utf-8", "not found\n"


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def handle_connection(conn, peer, name):
    """Read one HTTP/1.x request head from ``conn``, answer it and close (HTTP/1.0 style)."""
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST)
            if not chunk:
                break
            head += chunk
        words = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(words) >= 2 and words[0].isalpha():
            code, ctype, body = answer(name, words[0], words[1], peer[0], peer[1])
        else:
            code, ctype, body = 400, "text/plain; charset=utf-8", "bad request\n"
        data = body.encode("utf-8")
        conn.sendall(f"HTTP/1.0 {code} {REASONS[code]}\r\nServer: flatnet-probe/1\r\n"
                     f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
                     .encode("latin-1") + data)
    except OSError:
        # A caller that went away or timed out must not stop the agent.
        pass
    finally:
        conn.close()


def _bound_socket(kind, port, bind=None):
    family, address = _families(bind)
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _dual_stack(sock, family, address)
    sock.bind((address, port))
    return sock


def make_http_socket(port, bind=None):
    sock = _bound_socket(socket.SOCK_STREAM, port, bind)
    sock.listen(128)
    return sock


def serve_http(sock, name):
    """Accept for ever; each connection gets a thread of its own (a slow caller blocks nobody)."""
    while True:
        try:
            conn, peer = sock.accept()
        except OSError:
            # Out of descriptors or memory for a moment: wait rather than spin.
            time.sleep(0.05)
            continue
        threading.Thread(target=handle_connection, args=(conn, peer, name), daemon=True).start()


def make_udp_socket(port, bind=None):
    return _bound_socket(socket.SOCK_DGRAM, port, bind)


def serve_udp(sock, name):
    while True:
        try:
            _data, peer = sock.recvfrom(65535)
            sock.sendto(f"{name} {plain_ip(peer[0])}".encode("utf-8"), peer)
        except OSError:
            # A reply that cannot be sent (caller gone, no route back) must not stop the agent.
            continue


def agent_source():
    """Source text of this file, to be written to the node.

    Inside AnsiballZ this module comes from a zip: its loader still knows the source.
    """
    loader = globals().get("__loader__")
    if loader is not None and hasattr(loader, "get_source"):
        try:
            text = loader.get_source(__name__)
        except (ImportError, OSError):
            text = None
        if text:
            return text
    with open(__file__, encoding="utf-8") as f:
        return f.read()


def main(argv=None):
    parser = argparse.ArgumentParser(description="flatnet.cluster probe agent")
    parser.add_argument("--name", required=True, help="pod name answered on /hostname")
    parser.add_argument("--http-port", type=int, default=8083)
    parser.add_argument("--udp-port", type=int, default=8081)
    parser.add_argument("--bind", default=None, help="address to listen on (default: all)")
    parser.add_argument("--lifetime", type=float, default=0,
                        help="exit after this many seconds (default 0: never)")
    args = parser.parse_args(argv)

    http = make_http_socket(args.http_port, args.bind)
    udp = make_udp_socket(args.udp_port, args.bind)
    threading.Thread(target=serve_udp, args=(udp, args.name), daemon=True).start()

    def _term(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    if args.lifetime > 0:
        # SIGALRM interrupts the accept() of this (the main) thread.
        signal.signal(signal.SIGALRM, _term)
        signal.setitimer(signal.ITIMER_REAL, args.lifetime)
    sys.stdout.write(f"probe agent {args.name}: http {args.http_port}, udp {args.udp_port}\n")
    sys.stdout.flush()
    try:
        serve_http(http, args.name)
    finally:
        http.close()
        udp.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
