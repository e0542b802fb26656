# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors
"""The probe client: requests to the probe agents (probe_agent.py) from a pod's network
namespace or the host network, with one error vocabulary.

The probe and service_probe modules both ask the agents over HTTP (``GET PATH``) and UDP (a
datagram, answered with ``NAME CLIENT_IP``); probe also sends datagrams of the pod MTU with DF.
Each thread enters the source pod's namespace only to open its socket: a socket keeps the
namespace it was made in.

Errors: the request functions raise what the socket raised (the MTU check needs the errno);
``classify`` turns any of it into a ``ProbeError`` whose ``reason`` is one of ``REASONS``.
``service_reason`` is the one place that maps it to the words service_probe's results use.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from contextlib import contextmanager

from ansible_collections.flatnet.cluster.plugins.module_utils import netns

# What a failed request is, for the report's diagnosis (plugin_utils/report.py reads them).
# probe_mtu adds mtu-too-small, mtu-not-enforced and wrong-pod, from what it saw.
REASONS = ("timeout", "refused", "unreachable", "error")

# <linux/in.h>; the socket module does not export them on every Python.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_PMTUDISC_DO = getattr(socket, "IPV6_PMTUDISC_DO", 2)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
HEADER = {4: 28, 6: 48}  # IP + UDP header bytes

# The agents' ports (probe_agents starts them with these defaults) and the seconds one request
# may take: the same options in every module that probes; deep-copy before use.
AGENT_OPTIONS = dict(
    http_port=dict(type="int", default=8083),
    udp_port=dict(type="int", default=8081),
    timeout=dict(type="float", default=2.0),
)

# One address of one pod of the cluster, a probe's destination; deep-copy before use.
TARGET_OPTIONS = dict(
    node=dict(type="str", required=True),
    pod=dict(type="str", required=True),
    ip=dict(type="str", required=True),
)


class ProbeError(Exception):
    """A probe failed; ``reason`` is the short class of failure used by the report, ``cause``
    the exception it was made from (None when the probe itself found the failure)."""

    def __init__(self, reason, message, cause=None):
        super().__init__(message)
        self.reason = reason
        self.cause = cause


def classify(exc):
    """The ProbeError for any exception of a request (a ProbeError is returned as it is)."""
    if isinstance(exc, ProbeError):
        return exc
    if isinstance(exc, socket.timeout):
        return ProbeError("timeout", "timed out", exc)
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError("refused", "connection refused (no agent listening, or a reject rule)", exc)
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return ProbeError("unreachable", f"{os.strerror(exc.errno)} (no route, or no neighbour)", exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return ProbeError("error", f"{exc.strerror or exc} (errno {exc.errno})", exc)
    return ProbeError("error", str(exc), exc)


def service_reason(exc, proto):
    """The reason service_probe records for a failed request over ``proto`` (tcp, udp):
    ``timeout``, ``refused`` or ``error: WHAT`` (WHAT: the exception as Python words it).

    A UDP send that fails with EPERM is a refusal too: from the host network, the output hook's
    reject of a service without endpoints fails the send instead of answering."""
    err = classify(exc)
    if err.reason in ("timeout", "refused"):
        return err.reason
    if proto == "udp" and isinstance(err.cause, PermissionError):
        return "refused"
    return f"error: {err if err.cause is None else err.cause}"


@contextmanager
def in_netns(name):
    """Run the body in the named network namespace, in this thread only (sockets keep the
    namespace they were created in, so the caller only needs to open them inside)."""
    try:
        with netns.in_netns(name):
            yield
    except netns.NoNetns as e:
        raise ProbeError("error", f"pod {name} has no network namespace: {e.strerror}", e) from None


def family_of(ip):
    return ipaddress.ip_address(ip).version


def open_socket(ns, ip, kind):
    """A socket of ``ip``'s family, made in network namespace ``ns`` (None: the host network)."""
    fam = socket.AF_INET6 if family_of(ip) == 6 else socket.AF_INET
    with in_netns(ns):
        return socket.socket(fam, kind)


def http_get_with_source(ns, ip, port, path, timeout):
    """(local address the request left from, body of ``GET path`` on ip:port), opened from
    ``ns``; the whole request takes at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    sock = open_socket(ns, ip, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        source = sock.getsockname()[0]
        host = f"[{ip}]" if family_of(ip) == 6 else ip
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode("ascii"))
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        sock.close()
    raw = b"".join(chunks)
    head, _sep, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise ProbeError("error", f"HTTP {path}: unexpected answer {head[:60]!r}")
    return source, body.decode("utf-8", "replace").strip()


def http_get(ns, ip, port, path, timeout):
    """Body of ``GET path`` on ip:port, opened from ``ns`` (None: host network)."""
    return http_get_with_source(ns, ip, port, path, timeout)[1]


def udp_ask_with_source(ns, ip, port, timeout, payload=b"hostname"):
    """(local address, reply of the agent to one datagram), sent twice within the timeout as
    UDP may drop. An ICMP port unreachable shows as ECONNREFUSED on the connected socket."""
    sock = open_socket(ns, ip, socket.SOCK_DGRAM)
    try:
        sock.connect((ip, port))
        return sock.getsockname()[0], udp_exchange(sock, payload, timeout)
    finally:
        sock.close()


def udp_ask(ns, ip, port, timeout, payload=b"hostname"):
    """Reply of the agent to one datagram (sent twice within the timeout, as UDP may drop)."""
    return udp_ask_with_source(ns, ip, port, timeout, payload)[1]


def udp_exchange(sock, payload, timeout):
    """Send ``payload`` on the connected ``sock`` and return the reply; a second send halfway."""
    deadline = time.monotonic() + timeout
    for attempt in (1, 2):
        sock.send(payload)
        wait = (deadline - time.monotonic()) / (3 - attempt)
        sock.settimeout(max(wait, 0.01))
        try:
            return sock.recv(65535).decode("utf-8", "replace").strip()
        except socket.timeout:
            if attempt == 2:
                raise
    raise socket.timeout("timed out")


def strip_port(value):
    """``IP`` from agnhost-style ``IP:PORT`` / ``[IP]:PORT`` or a bare IP."""
    value = value.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def plain_ip(value):
    """An address as it can be compared: IPv4-mapped unwrapped, IPv6 compressed."""
    try:
        addr = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return value
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def probe_mtu(ns, ip, port, mtu, timeout, want_pod):
    """(seen, ok, reason, error) of the path MTU from a pod: exactly ``mtu`` bytes with DF must
    pass to the agent and back, ``mtu``+1 must be refused locally (EMSGSIZE)."""
    version = family_of(ip)
    size = mtu - HEADER[version]
    sock = open_socket(ns, ip, socket.SOCK_DGRAM)
    try:
        if version == 4:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        sock.connect((ip, port))
        # A small datagram first: a path that is simply broken is not an MTU problem.
        udp_exchange(sock, b"m", timeout)
        try:
            reply = udp_exchange(sock, b"m" * size, timeout)
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                raise ProbeError("mtu-too-small",
                                 f"{mtu}-byte datagram refused: path MTU is {_path_mtu(sock, version)}, "
                                 f"smaller than the pod MTU {mtu}") from None
            if isinstance(e, socket.timeout):
                raise ProbeError("mtu-too-small",
                                 f"no answer to a {mtu}-byte datagram with DF (dropped on the path?), "
                                 f"path MTU seen {_path_mtu(sock, version)}") from None
            raise
        name = reply.partition(" ")[0]
        if name != want_pod:
            return f"{name} answered", False, "wrong-pod", f"answered by {name!r}, not {want_pod!r}"
        try:
            sock.send(b"m" * (size + 1))
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                return f"{mtu} passed, {mtu + 1} refused (message too long)", True, "ok", None
            raise
        return (f"{mtu} passed, {mtu + 1} sent", False, "mtu-not-enforced",
                f"a {mtu + 1}-byte datagram with DF was sent: the pod's interface or route MTU is "
                f"above the planned {mtu} (path MTU {_path_mtu(sock, version)})")
    finally:
        sock.close()


def _path_mtu(sock, version):
    try:
        if version == 4:
            return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
        return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
    except OSError:
        return "unknown"
