# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors
"""Names, markers and the rules for names: what both the controller (the planner) and the
managed hosts (the kernel layer) must agree on. Pure Python, no I/O, safe to import from
either side.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

# Routes and neighbour entries the collection makes carry this protocol number, so that
# reconciling never touches an entry someone else made.
RT_PROTO = 157

# ifalias values mark links as ours; links without the marker are never touched.
ALIAS = "flatnet"
POD_ALIAS_PREFIX = "flatnet pod "

# A pod name is a DNS label: a safe netns name, file name and (later) DNS name. \Z, not $:
# "$" also matches before a trailing newline.
POD_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")

# A Linux interface name the collection accepts: 1-15 bytes (IFNAMSIZ - 1) of letters,
# digits, '_', '.', '-', not starting with '-' (it would read as an option), never '.' or
# '..' (the kernel refuses them) and never 'all' or 'default' (they are the sysctl
# directories net.*.conf.all and .default).
LINK_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}\Z")
RESERVED_LINK_NAMES = frozenset({".", "..", "all", "default"})

# What an ``ip -batch`` / ``bridge -batch`` line cannot carry. iproute2 strips everything
# from '#' on as a comment, takes a line ending in '\' as continued, knows no escapes, and
# lets a word start a quoted string with either quote character.
BATCH_FORBIDDEN = frozenset('"\'\\#')
# The same test as one regex: batch_word_problem runs on every word of every batch line (a
# node with 100 pods writes about 10,000 neighbour lines), and a per-character set is slow.
_BATCH_BAD = re.compile("[" + re.escape("".join(sorted(BATCH_FORBIDDEN))) + "\x00-\x1f\x7f]")


def is_pod_name(name) -> bool:
    return isinstance(name, str) and POD_NAME_RE.match(name) is not None


def link_name_problem(name) -> str | None:
    """Why ``name`` cannot be an interface name the collection makes, or None when it can."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if name in RESERVED_LINK_NAMES:
        return "is reserved by the kernel"
    if len(name.encode("utf-8")) > 15:
        return f"is {len(name.encode('utf-8'))} bytes long; Linux interface names have at most 15"
    if not LINK_NAME_RE.match(name):
        return ("may only hold letters, digits, '_', '.' and '-' (not first), "
                "with no spaces, quotes or newlines")
    return None


def batch_word_problem(word) -> str | None:
    """Why ``word`` cannot be one word of an iproute2 batch line, or None when it can."""
    text = str(word)
    if not _BATCH_BAD.search(text):
        return None
    bad = sorted({c for c in text if c in BATCH_FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if bad:
        return "holds " + ", ".join(repr(c) for c in bad) + ", which an ip/bridge/nft batch line cannot carry"
    return None


def veth_name(pod):
    """Host end of a pod's veth: ``veth`` + 8 hex characters of the pod name's digest."""
    return "veth" + hashlib.sha256(pod.encode("utf-8")).hexdigest()[:8]


def derived_mac(seed, first_octet="0a"):
    """A stable MAC for ``seed``: ``first_octet`` (locally administered, unicast) + the first
    5 bytes of its SHA-256. Pods, bridges and VTEPs each get theirs from a seed of their own, so
    a rebuilt link keeps its MAC and its neighbours' entries stay right."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return ":".join([first_octet] + [f"{b:02x}" for b in digest[:5]])


def bridge_mac(bridge, gateways):
    """The node bridge's MAC, derived from its name and lowest gateway address (locally
    administered, unicast), or None without a gateway. A bridge left to pick its own MAC
    takes its lowest port's, which changes as pods come and go; the pods' static
    neighbour entries for the gateway need one that never does."""
    ips = sorted((ipaddress.ip_interface(str(g)).ip for g in gateways or []),
                 key=lambda a: (a.version, a))
    if not ips:
        return None
    return derived_mac(f"flatnet-bridge:{bridge}:{ips[0]}")
