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
to the node: keep it free of any import outside the standard library.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import socket
import socketserver
import sys
import threading


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


def make_handler(name):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "flatnet-probe/1"
        protocol_version = "HTTP/1.0"

        def _send(self, code, body, ctype="text/plain; charset=utf-8"):
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0].rstrip("/").lower() or "/"
            host, port = self.client_address[0], self.client_address[1]
            if path in ("/hostname",):
                self._send(200, name)
            elif path == "/clientip":
                self._send(200, host_port(host, port))
            elif path == "/":
                body = json.dumps({"name": name, "client_ip": plain_ip(host)})
                self._send(200, body, "application/json")
            else:
                self._send(404, "not found\n")

        def log_message(self, format, *args):  # noqa: A002 (signature of the base class)
            # One line per request would fill the log of a big cluster's verification.
            pass

    return Handler


def make_http_server(name, port, bind=None):
    family, address = _families(bind)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = family
        request_queue_size = 128

        def server_bind(self):
            _dual_stack(self.socket, family, address)
            # Not HTTPServer.server_bind: its getfqdn() is a reverse DNS lookup, which in a pod
            # with a default route but no reachable resolver blocks for many seconds.
            socketserver.TCPServer.server_bind(self)
            self.server_name = name
            self.server_port = self.server_address[1]

    return Server((address, port), make_handler(name))


def make_udp_socket(port, bind=None):
    family, address = _families(bind)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _dual_stack(sock, family, address)
    sock.bind((address, port))
    return sock


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

    httpd = make_http_server(args.name, args.http_port, args.bind)
    udp = make_udp_socket(args.udp_port, args.bind)
    threading.Thread(target=serve_udp, args=(udp, args.name), daemon=True).start()

    def _term(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    if args.lifetime > 0:
        # SIGALRM interrupts serve_forever's select in this (the main) thread.
        signal.signal(signal.SIGALRM, _term)
        signal.setitimer(signal.ITIMER_REAL, args.lifetime)
    sys.stdout.write(f"probe agent {args.name}: http {args.http_port}, udp {args.udp_port}\n")
    sys.stdout.flush()
    try:
        httpd.serve_forever(poll_interval=0.5)
    finally:
        httpd.server_close()
        udp.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
