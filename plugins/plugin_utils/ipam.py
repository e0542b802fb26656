# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address planning for flatnet.cluster (controller side, pure functions).

Everything here is deterministic: the same input always gives the same plan.
Stability sources, highest first: pins, assignments recorded on the node,
the cached plan, then fresh allocation (lowest free block / address first,
nodes and pods in sorted name order). Every problem raises ``PlanError``
with one message that names the bad value and the fix.
"""

from __future__ import annotations

import difflib
import functools
import gc
import ipaddress
import json
import re
import shlex
import socket
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cni as _cni
from ansible_collections.flatnet.cluster.plugins.module_utils.names import (
    derived_mac,
    is_pod_name,
    link_name_problem,
)

try:
    from netaddr import AddrFormatError, IPAddress, IPNetwork
except ImportError as _exc:  # netaddr is a controller requirement; say so when it is missing
    NETADDR_IMPORT_ERROR: ImportError | None = _exc
    AddrFormatError = ValueError
    IPAddress = IPNetwork = None
else:
    NETADDR_IMPORT_ERROR = None

DEFAULT_CLUSTER_CIDR = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PREFIX = 24
DEFAULT_NODE_PREFIX_V6 = 64
DEFAULT_VXLAN = {"vni": 1, "port": 8472, "device": "flatnet.1"}
BACKENDS = ("host-gw", "vxlan", "auto", "bgp")
# VXLAN encapsulation cost: outer IP + UDP + VXLAN + inner Ethernet.
VXLAN_OVERHEAD = {4: 50, 6: 70}
MIN_MTU = 576
MIN_MTU_V6 = 1280
MAX_MTU = 65535
# kube-controller-manager's limit: it keeps the number of v6 blocks enumerable.
MAX_V6_PREFIX_DELTA = 16
DEFAULT_BRIDGE = "cni0"
# The keys a pod entry may have; anything else is a typo and is refused by name.
POD_KEYS = ("name", "ip", "command", "labels")
# The cluster name ends up in the plan file's name; the group is used as a host pattern.
CLUSTER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
GROUP_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
# The spellings Ansible's ``bool`` type accepts (-e gives strings such as "false").
_BOOL_TRUE = frozenset({"yes", "on", "1", "true", "y", "t"})
_BOOL_FALSE = frozenset({"no", "off", "0", "false", "n", "f"})

# How messages name each input. build_plan() names the role variables a user writes in the
# inventory; the filters (node_cidrs, pod_ips) name their own arguments.
_ROLE_VARS = {
    "cluster_cidr": "flatnet_cluster_cidr",
    "node_prefix": "flatnet_node_prefix",
    "node_prefix_v6": "flatnet_node_prefix_v6",
    "service_cidr": "flatnet_service_cidr",
    "reserved_cidrs": "flatnet_reserved_cidrs",
    "pod_cidr": "flatnet_pod_cidr",
    "pods": "flatnet_pods",
    "pods_per_node": "flatnet_pods_per_node",
    "backend": "flatnet_backend",
    "mtu": "flatnet_mtu",
    "masquerade": "flatnet_masquerade",
    "vni": "flatnet_vxlan_vni",
    "port": "flatnet_vxlan_port",
    "device": "flatnet_vxlan_device",
    "bridge": "flatnet_bridge",
    "prune": "flatnet_prune",
    "firewall": "flatnet_firewall",
    "vxlan_guard": "flatnet_vxlan_guard",
    "underlay_interface": "flatnet_underlay_interface",
    "cluster_name": "flatnet_cluster_name",
    "group": "flatnet_group",
}
ROLE_VARS = MappingProxyType(_ROLE_VARS)
PLAIN_NAMES = MappingProxyType(dict({k: k for k in _ROLE_VARS}, vni="vxlan vni", port="vxlan port",
                                    device="vxlan device"))

# Ranges that can never carry pods: a cluster, service, reserved or pinned CIDR overlapping
# one of them is refused (IPv4 first, then IPv6).
UNUSABLE_RANGES = (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, with the broadcast address 255.255.255.255"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)

_FAMILY_NAME = {4: "IPv4", 6: "IPv6"}


class PlanError(Exception):
    """A planning problem; ``str(err)`` is the one message for the user."""


def require_netaddr() -> None:
    """Raise PlanError when the netaddr package is not installed on the controller."""
    if NETADDR_IMPORT_ERROR is not None:
        raise PlanError(
            "flatnet.cluster plans addresses with the Python package netaddr, which is not installed "
            f"for the Python that runs Ansible on the controller ({NETADDR_IMPORT_ERROR}); "
            "install it with: pip install netaddr"
        )


# --------------------------------------------------------------------------- parsing


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping):
        return list(value)
    return [value]


def unusable_range(net: IPNetwork) -> str | None:
    """Why ``net`` can never carry pods (it overlaps loopback, multicast, ...), or None."""
    require_netaddr()
    for cidr, label in UNUSABLE_RANGES:
        bad = IPNetwork(cidr)
        if _overlaps(net, bad):
            return f"overlaps {cidr} ({label})"
    return None


def parse_network(value, what: str, usable: bool = True) -> IPNetwork:
    """Parse a CIDR that must be a network (not a host address inside one).

    With ``usable`` (the default) a range that overlaps one that can never carry pods
    (loopback, multicast, link-local, unspecified, reserved, IPv4-mapped) is refused too.
    """
    require_netaddr()
    if not isinstance(value, str) or "/" not in value:
        raise PlanError(
            f"{what} {value!r} is not a CIDR; write a network with a prefix length, "
            "e.g. 10.244.0.0/16 or fd00:10:244::/56"
        )
    try:
        net = IPNetwork(value.strip())
    except (AddrFormatError, ValueError, TypeError) as exc:
        raise PlanError(f"{what} {value!r} is not a valid CIDR ({exc}); write e.g. 10.244.0.0/16") from None
    if net.ip != net.network:
        raise PlanError(
            f"{what} {value.strip()} is a host address, not a network; did you mean {net.cidr}?"
        )
    if usable:
        why = unusable_range(net)
        if why is not None:
            example = "10.244.0.0/16" if net.version == 4 else "fd00:10:244::/56"
            raise PlanError(
                f"{what} {net} {why}, which can never carry pods; use a private unicast range "
                f"such as {example}"
            )
    return net


def parse_address(value, what: str) -> IPAddress:
    """Parse a bare IP address (a trailing /prefix is refused here)."""
    require_netaddr()
    if not isinstance(value, str) or "/" in value:
        raise PlanError(f"{what} {value!r} is not an IP address; write e.g. 10.244.0.9")
    try:
        return IPAddress(value.strip())
    except (AddrFormatError, ValueError, TypeError) as exc:
        raise PlanError(f"{what} {value!r} is not a valid IP address ({exc})") from None


def _by_family(nets: list[IPNetwork], what: str) -> list[IPNetwork]:
    seen: dict[int, IPNetwork] = {}
    for net in nets:
        if net.version in seen:
            raise PlanError(
                f"{what} has two {_FAMILY_NAME[net.version]} entries ({seen[net.version]} and {net}); "
                "give at most one IPv4 and one IPv6 CIDR"
            )
        seen[net.version] = net
    return [seen[f] for f in (4, 6) if f in seen]


def parse_cluster_cidrs(value, what: str = "cluster_cidr") -> list[IPNetwork]:
    """Parse ``cluster_cidr``: a string or a list of one IPv4 and/or one IPv6 CIDR (v4 first)."""
    if isinstance(value, Mapping):
        raise PlanError(f"{what} {value!r} is not a CIDR or a list of CIDRs; write e.g. 10.244.0.0/16")
    items = _as_list(value)
    if not items:
        raise PlanError(f"{what} is empty; set it, e.g. 10.244.0.0/16 or [10.244.0.0/16, fd00:10:244::/56]")
    return _by_family([parse_network(v, what) for v in items], what)


# --------------------------------------------------------------------------- small rules


def _block(cidr) -> IPNetwork:
    """A node block as a netaddr network; one already parsed is not parsed again (the plan
    calls these helpers for every node)."""
    return cidr.cidr if isinstance(cidr, IPNetwork) else IPNetwork(str(cidr)).cidr


def _ip_int(text: str):
    """(integer, version) of ``ADDRESS`` or ``ADDRESS/PREFIX``, or None when it is not one.
    inet_pton is strict and a hundred times cheaper than netaddr or ipaddress, and a rerun
    parses one cached address per pod of the cluster."""
    addr = text.split("/", 1)[0]
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return int.from_bytes(socket.inet_pton(family, addr), "big"), version
        except (OSError, ValueError):
            continue
    return None


def _network(first: int, prefix: int, version: int) -> IPNetwork:
    """A netaddr network from integers, without formatting and parsing a string."""
    return IPNetwork((first, prefix), version=version)


def _canonical_block(text) -> IPNetwork | None:
    """``ADDRESS/PREFIX`` as a network when it is one exactly as the plan writes it (canonical
    address, decimal prefix, no host bits), else None (then parse_network judges it)."""
    if not isinstance(text, str):
        return None
    addr, sep, plen = text.partition("/")
    if not sep or not (plen.isascii() and plen.isdigit()) or plen != str(int(plen)):
        return None
    parsed = _ip_int(addr)
    if parsed is None:
        return None
    first, version = parsed
    prefix = int(plen)
    width = 32 if version == 4 else 128
    if prefix > width or first & ((1 << (width - prefix)) - 1):
        return None
    if version == 6 and _address(first, 6) != addr:
        return None
    return _network(first, prefix, version)


def _address(value: int, version: int) -> str:
    if version == 4:
        # Integer ops: ten times cheaper than ipaddress, and the plan formats an address per pod.
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


def gateway(cidr) -> str:
    """Bridge address of a node block: its first host address, with the block's prefix."""
    net = _block(cidr)
    return f"{_address(net.first + 1, net.version)}/{net.prefixlen}"


def vtep_ip(cidr) -> str:
    """VTEP address of a node block: the block's network address (used as /32 or /128)."""
    net = _block(cidr)
    return _address(net.first, net.version)


def vtep_mac(underlay_ip) -> str:
    """Stable, locally administered unicast MAC for a node's VXLAN device.

    ``0e:`` + the first 5 bytes of sha256("flatnet-vtep:" + underlay_ip); the address is
    normalised first, so ``2001:DB8::1`` and ``2001:db8::1`` give the same MAC.
    """
    require_netaddr()
    ip = str(parse_address(str(underlay_ip), "underlay IP"))
    return derived_mac(f"flatnet-vtep:{ip}", "0e")


def _reserved_offsets(net: IPNetwork) -> set[int]:
    """Addresses of a block that pods never get: network (VTEP), gateway, v4 broadcast."""
    offsets = {net.first, net.first + 1}
    if net.version == 4:
        offsets.add(net.last)
    return offsets


def usable_pod_count(cidr) -> int:
    require_netaddr()
    net = _block(cidr)
    return max(0, net.size - len(_reserved_offsets(net)))


def _min_prefix_for(family: int, pods: int) -> int:
    """Longest node prefix whose block still holds ``pods`` pods."""
    bits = 32 if family == 4 else 128
    reserved = 3 if family == 4 else 2
    prefix = bits
    while prefix > 0 and (1 << (bits - prefix)) - reserved < pods:
        prefix -= 1
    return prefix


def _overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.first <= b.last and b.first <= a.last


# --------------------------------------------------------------------------- node blocks


class _Claim:
    """A node's wish for a block: where it came from and whether a bad one is fatal."""

    __slots__ = ("node", "value", "source", "kind")

    def __init__(self, node: str, value, source: str, kind: str):
        self.node = node
        self.value = value
        self.source = source  # human text: "pinned", "recorded on node1", ...
        self.kind = kind  # "pin" | "hard" (recorded, out-of-play cache) | "soft" (cache)


def _check_prefixes(clusters: list[IPNetwork], prefixes: dict[int, int], v: Mapping = PLAIN_NAMES) -> dict[int, int]:
    """Check the node prefix of each cluster family; return them as integers."""
    out = dict(prefixes)
    for cluster in clusters:
        fam = cluster.version
        opt = v["node_prefix"] if fam == 4 else v["node_prefix_v6"]
        bits = 32 if fam == 4 else 128
        prefix = _integer(prefixes[fam], opt, 0, bits, "a prefix length", example=24 if fam == 4 else 64)
        out[fam] = prefix
        if prefix <= cluster.prefixlen:
            raise PlanError(
                f"{opt} /{prefix} is not longer than {v['cluster_cidr']} {cluster}; node blocks must be "
                f"smaller than the cluster range: set {opt} to at least {cluster.prefixlen + 1}"
            )
        if fam == 6 and prefix - cluster.prefixlen > MAX_V6_PREFIX_DELTA:
            raise PlanError(
                f"{opt} /{prefix} is {prefix - cluster.prefixlen} bits longer than {v['cluster_cidr']} "
                f"{cluster}; at most {MAX_V6_PREFIX_DELTA} bits are allowed: set {v['node_prefix_v6']} to "
                f"{cluster.prefixlen + MAX_V6_PREFIX_DELTA} or less, or use a longer IPv6 cluster prefix"
            )
        if usable_pod_count(f"{cluster.network}/{prefix}") < 1:
            longest = bits - 2  # v4 /30 and v6 /126 still leave pod addresses
            raise PlanError(
                f"{opt} /{prefix} leaves no address for pods (network, gateway"
                f"{' and broadcast' if fam == 4 else ''} are reserved); use /{longest} or shorter"
            )
    return out


def _check_disjoint(clusters: list[IPNetwork], others: list[tuple[str, IPNetwork]],
                    v: Mapping = PLAIN_NAMES) -> None:
    for cluster in clusters:
        for label, other in others:
            if _overlaps(cluster, other):
                raise PlanError(
                    f"{v['cluster_cidr']} {cluster} overlaps {label} {other}; pods would shadow those "
                    f"addresses: choose a {v['cluster_cidr']} that does not contain or sit inside {other}"
                )


def _assign_blocks(
    clusters: list[IPNetwork],
    prefixes: dict[int, int],
    nodes: list[str],
    claims: list[_Claim],
    v: Mapping = PLAIN_NAMES,
) -> dict[str, dict[int, IPNetwork]]:
    """Give each node one block per cluster family; claims are in priority order."""
    cluster_of = {c.version: c for c in clusters}
    taken: dict[int, dict[int, tuple[str, str]]] = {f: {} for f in cluster_of}  # first -> (node, source)
    blocks: dict[str, dict[int, IPNetwork]] = {n: {} for n in nodes}
    pinned_family: dict[tuple[str, int], str] = {}

    for claim in claims:
        if claim.node not in blocks:
            continue
        for raw in (claim.value if isinstance(claim.value, list) else _as_list(claim.value)):
            soft = claim.kind == "soft"
            # Recorded and cached blocks need no range check of their own: one outside the
            # (checked) cluster CIDR is refused below anyway. A canonical one (what the plan
            # writes) is parsed with integer ops: a rerun reads one per node of the cluster.
            net = _canonical_block(raw) if claim.kind != "pin" else None
            if net is None:
                try:
                    net = parse_network(raw, f"{v['pod_cidr']} of {claim.node}" if claim.kind == "pin"
                                        else f"pod CIDR of {claim.node} ({claim.source})",
                                        usable=claim.kind == "pin")
                except PlanError:
                    if soft:
                        continue
                    raise
            fam = net.version
            if claim.kind == "pin":
                key = (claim.node, fam)
                if key in pinned_family:
                    raise PlanError(
                        f"{v['pod_cidr']} of {claim.node} pins two {_FAMILY_NAME[fam]} blocks "
                        f"({pinned_family[key]} and {net}); pin one block per family"
                    )
                pinned_family[key] = str(net)
            if fam in blocks[claim.node]:
                continue  # a higher-priority source already decided this family
            cluster = cluster_of.get(fam)
            if cluster is None:
                if soft:
                    continue
                if claim.kind == "pin":
                    raise PlanError(
                        f"{v['pod_cidr']} {net} of {claim.node} is {_FAMILY_NAME[fam]} but {v['cluster_cidr']} has no "
                        f"{_FAMILY_NAME[fam]} range; add one to {v['cluster_cidr']} or drop the pin"
                    )
                raise PlanError(
                    f"{claim.node} uses {net} ({claim.source}) but {v['cluster_cidr']} no longer has an "
                    f"{_FAMILY_NAME[fam]} range; changing {v['cluster_cidr']} needs a teardown of the node "
                    f"first (playbooks/teardown.yml), or restore the old {v['cluster_cidr']}"
                )
            if not (cluster.first <= net.first and net.last <= cluster.last):
                if soft:
                    continue
                if claim.kind == "pin":
                    raise PlanError(
                        f"{v['pod_cidr']} {net} pinned for {claim.node} is outside {v['cluster_cidr']} {cluster}; "
                        f"pin a /{prefixes[fam]} inside {cluster}"
                    )
                raise PlanError(
                    f"{claim.node} uses {net} ({claim.source}), which is outside {v['cluster_cidr']} {cluster}; "
                    f"changing {v['cluster_cidr']} needs a teardown of the node first (playbooks/teardown.yml), "
                    f"or restore the old {v['cluster_cidr']}"
                )
            if net.prefixlen != prefixes[fam]:
                opt = v["node_prefix"] if fam == 4 else v["node_prefix_v6"]
                if soft:
                    continue
                if claim.kind == "pin":
                    raise PlanError(
                        f"{v['pod_cidr']} {net} pinned for {claim.node} is a /{net.prefixlen} but {opt} is "
                        f"/{prefixes[fam]}; pin a /{prefixes[fam]} or change {opt}"
                    )
                raise PlanError(
                    f"{claim.node} uses {net} ({claim.source}) but {opt} is now /{prefixes[fam]}; "
                    f"set {opt} back to {net.prefixlen} or tear the node down first (playbooks/teardown.yml)"
                )
            holder = taken[fam].get(net.first)
            if holder is not None:
                if soft:
                    continue
                other, other_source = holder
                raise PlanError(
                    f"{net} is wanted by {claim.node} ({claim.source}) but {other} already has it "
                    f"({other_source}); pin another block for one of them, or tear one of them down first"
                )
            taken[fam][net.first] = (claim.node, claim.source)
            blocks[claim.node][fam] = net

    for fam, cluster in cluster_of.items():
        prefix = prefixes[fam]
        total = 1 << (prefix - cluster.prefixlen)
        missing = [n for n in sorted(nodes) if fam not in blocks[n]]
        if len(missing) > total - len(taken[fam]):
            opt = v["node_prefix"] if fam == 4 else v["node_prefix_v6"]
            raise PlanError(
                f"{v['cluster_cidr']} {cluster} holds {total} /{prefix} node blocks but {len(nodes)} nodes need "
                f"one; set a longer {opt} (smaller blocks) or a larger {v['cluster_cidr']}"
            )
        size = 1 << ((32 if fam == 4 else 128) - prefix)
        index = 0
        for node in missing:
            while cluster.first + index * size in taken[fam]:
                index += 1
            first = cluster.first + index * size
            net = _network(first, prefix, fam)
            taken[fam][first] = (node, "allocated")
            blocks[node][fam] = net
    return blocks


def node_cidrs(
    cluster_cidr,
    nodes,
    prefix: int = DEFAULT_NODE_PREFIX,
    prefix_v6: int = DEFAULT_NODE_PREFIX_V6,
    existing=None,
    reserved=None,
    pins=None,
) -> dict[str, list[str]]:
    """Plan one pod CIDR per node and cluster family: ``{node: [v4 block, v6 block]}``.

    ``existing`` ({node: cidr or [cidrs]}) are kept as they are; ``pins`` ({node: cidr or
    [cidrs]}) win over them; ``reserved`` are ranges the cluster CIDR must not overlap.
    """
    require_netaddr()
    clusters = parse_cluster_cidrs(cluster_cidr)
    prefixes = _check_prefixes(clusters, {4: prefix, 6: prefix_v6})
    others = [("reserved range", parse_network(r, "reserved_cidrs entry")) for r in _as_list(reserved)]
    _check_disjoint(clusters, others)
    names = _node_names(nodes)
    claims = [_Claim(n, v, "pinned", "pin") for n, v in sorted((pins or {}).items()) if v]
    claims += [_Claim(n, v, "existing", "hard") for n, v in sorted((existing or {}).items()) if v]
    blocks = _assign_blocks(clusters, prefixes, names, claims)
    return {n: [str(blocks[n][c.version]) for c in clusters] for n in names}


def _node_names(nodes) -> list[str]:
    names = [str(n) for n in (nodes.keys() if isinstance(nodes, Mapping) else _as_list(nodes))]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PlanError(f"node names must be unique; duplicated: {', '.join(dup)}")
    return sorted(names)


# --------------------------------------------------------------------------- pod addresses


def _check_pod_names(node: str, names: list, v: Mapping = PLAIN_NAMES) -> None:
    seen = set()
    for name in names:
        if not is_pod_name(name):
            label = "" if v is PLAIN_NAMES else f" ({v['pods']})"
            raise PlanError(
                f"pod name {name!r} on {node}{label} is not allowed: it becomes a network namespace and a "
                "file name, so it must be a DNS label (lower-case letters, digits and '-', starting "
                "and ending with a letter or digit, at most 63 characters), e.g. web-1"
            )
        if name in seen:
            raise PlanError(f"pod {name} is listed twice on {node}; pod names must be unique per node")
        seen.add(name)


@functools.lru_cache(maxsize=64)
def _last_octets(low: int, high: int, tail: str) -> frozenset:
    """The texts ``"<octet><tail>"`` of the last IPv4 octets low..high (canonical decimal)."""
    return frozenset(f"{octet}{tail}" for octet in range(low, high + 1))


def _unchanged_pod_ips(blocks: list[IPNetwork], pods: list[str], claims: list[tuple[str, object]]):
    """The pods' addresses when a rerun changes nothing on the node, else None.

    A rerun's common case: an IPv4 block of /24 or longer, the cached plan's pod entries for
    exactly these pods (as written: sorted by name, one ``ADDR/PREFIX`` each), and records on
    the node that are absent or say the same. Then the generic path (_assign_pod_ips) would keep
    every cached address as it is, and it is enough to check, with set operations over the
    node's texts instead of parsing each, that each one is a canonical usable address of the
    block and that no two pods share one. Anything else (pins, CNI ranges, a hand-edited or
    stale entry, another pod set, IPv6) returns None: the generic path decides, and refuses.
    """
    if len(blocks) != 1 or len(claims) != 2:
        return None
    block = blocks[0]
    (_recorded_source, recorded), (_cached_source, cached) = claims
    if block.version != 4 or block.prefixlen < 24 or not isinstance(cached, list) or len(cached) != len(pods):
        return None
    try:
        names = [p["name"] for p in cached]
        texts = [ips[0] for ips in [p["ips"] for p in cached] if isinstance(ips, list) and len(ips) == 1]
    except (TypeError, KeyError):
        return None
    if len(texts) != len(names) or names != sorted(pods):
        return None
    first = block.first
    head = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}."
    tail = f"/{block.prefixlen}"
    size = len(head)
    last = [t[size:] for t in texts if isinstance(t, str) and t.startswith(head)]
    if (len(last) != len(texts) or len(set(last)) != len(last)
            or not _last_octets((first & 255) + 2, (first & 255) + (1 << (32 - block.prefixlen)) - 2,
                                tail).issuperset(last)):
        return None
    if recorded:  # records win over the cache: they must hold the same addresses
        if not isinstance(recorded, Mapping):
            return None
        cut = -len(tail)
        for name, text in zip(names, texts):
            held = recorded.get(name)
            if held is not None and held != [text[:cut]] and held != [text]:
                return None
    return {name: [text] for name, text in zip(names, texts)}


def _assign_pod_ips(
    node: str,
    blocks: list[IPNetwork],
    pods: list[str],
    pins: Mapping,
    claims: list[tuple[str, Mapping]],
    v: Mapping = PLAIN_NAMES,
    ceilings: Mapping | None = None,
) -> dict[str, list[str]]:
    """Give each pod one address per node block. ``claims``: [(source, {pod: ips})], soft.

    ``ceilings`` ({family: (last address for new pods, why)}) keeps new and pinned pods below
    the CNI share (see plugin_utils/cni.py); addresses pods already have are kept.
    """
    by_family = {b.version: b for b in blocks}
    ceilings = ceilings or {}
    for block in blocks:
        # usable_pod_count() without re-normalising the block: this runs once per node.
        usable = max(0, block.last - block.first + 1 - len(_reserved_offsets(block)))
        if len(pods) > usable:
            opt = v["node_prefix"] if block.version == 4 else v["node_prefix_v6"]
            raise PlanError(
                f"{node} has {len(pods)} pods but its block {block} holds only {usable} pod addresses; "
                f"run fewer pods on {node} or set {opt} to {_min_prefix_for(block.version, len(pods))} "
                "or shorter (needs a teardown when blocks already exist)"
            )
    if not pins and not ceilings:
        kept = _unchanged_pod_ips(blocks, pods, claims)
        if kept is not None:
            return kept
    taken: dict[int, dict[int, str]] = {f: {} for f in by_family}
    pinned: set[tuple[int, int]] = set()
    result: dict[str, dict[int, IPAddress]] = {p: {} for p in pods}

    for pod in sorted(pins):
        if pod not in result:
            continue
        seen_fam: set[int] = set()
        for raw in _as_list(pins[pod]):
            what = f"ip of pod {pod} on {node}" if v is PLAIN_NAMES else f"{v['pods']} of {node}: ip of pod {pod}"
            text = raw
            if isinstance(raw, str) and "/" in raw:
                addr_text, plen = raw.split("/", 1)
                fam_block = None
                try:
                    fam_block = by_family.get(IPAddress(addr_text).version)
                except (AddrFormatError, ValueError):
                    pass
                if fam_block is not None and plen.strip() != str(fam_block.prefixlen):
                    raise PlanError(
                        f"{what} {raw} has prefix /{plen} but the node block is {fam_block}; "
                        f"write the bare address {addr_text} or use /{fam_block.prefixlen}"
                    )
                text = addr_text
            ip = parse_address(text, what)
            fam = ip.version
            if fam in seen_fam:
                raise PlanError(f"{what} pins two {_FAMILY_NAME[fam]} addresses; pin one per family")
            seen_fam.add(fam)
            block = by_family.get(fam)
            if block is None:
                raise PlanError(
                    f"{what} {ip} is {_FAMILY_NAME[fam]} but {node} has no {_FAMILY_NAME[fam]} pod block; "
                    f"pin an address of the node's block or add that family to {v['cluster_cidr']}"
                )
            if not block.first <= int(ip) <= block.last:
                raise PlanError(
                    f"{what} {ip} is outside the node's block {block}; pin an address inside {block} "
                    f"or move the pod to the node that owns {ip}"
                )
            if int(ip) in _reserved_offsets(block):
                role = ("the VTEP (network) address" if int(ip) == block.first
                        else "the gateway (bridge) address" if int(ip) == block.first + 1
                        else "the broadcast address")
                raise PlanError(
                    f"{what} {ip} is {role} of {block}; pin an address from "
                    f"{IPAddress(block.first + 2, fam)} upward"
                )
            if fam in ceilings and int(ip) > ceilings[fam][0]:
                raise PlanError(
                    f"{what} {ip} is in {ceilings[fam][1]}; pin an address from "
                    f"{IPAddress(block.first + 2, fam)} to {IPAddress(ceilings[fam][0], fam)}"
                )
            if int(ip) in taken[fam]:
                raise PlanError(
                    f"{what} {ip} is already pinned for pod {taken[fam][int(ip)]}; give each pod its own address"
                )
            taken[fam][int(ip)] = pod
            pinned.add((fam, int(ip)))
            result[pod][fam] = ip

    reserved = {fam: _reserved_offsets(block) for fam, block in by_family.items()}
    bounds = {fam: (block.first, block.last) for fam, block in by_family.items()}
    suffix = {fam: f"/{block.prefixlen}" for fam, block in by_family.items()}
    # The text a kept IPv4 claim already has ("ADDR" or "ADDR/PREFIX"), reused for the output:
    # inet_pton accepts only the canonical dotted quad (no leading zeros, no spaces), so the
    # text is what formatting the parsed integer would give. A rerun then formats nothing.
    texts: dict[str, dict[int, str]] = {}  # pod -> family -> kept text
    missing = len(pods) * len(by_family) - sum(len(chosen) for chosen in result.values())
    # A rerun reads one claim per pod of the cluster: the loop parses them with inet_pton and
    # keeps its lookups local.
    pton, from_bytes, af4, af6 = socket.inet_pton, int.from_bytes, socket.AF_INET, socket.AF_INET6
    for source, mapping in claims:
        if not mapping or not missing:
            continue
        if isinstance(mapping, list):  # the cached plan's pod entries, [{name, ips, ...}], as written
            items = [(p["name"], p.get("ips")) for p in mapping if isinstance(p, dict) and isinstance(p.get("name"), str)]
            if any(items[i][0] > items[i + 1][0] for i in range(len(items) - 1)):
                items.sort(key=lambda item: item[0])  # hand-edited: the sorted order decides, as below
        else:
            items = [(pod, mapping[pod]) for pod in sorted(mapping)]
        for pod, values in items:
            chosen = result.get(pod)
            if chosen is None:
                continue
            for raw in (values if isinstance(values, list) else _as_list(values)):
                text = raw if isinstance(raw, str) else str(raw)
                addr, slash, plen = text.partition("/")
                try:
                    if ":" in addr:
                        ip, fam = from_bytes(pton(af6, addr), "big"), 6
                    else:
                        ip, fam = from_bytes(pton(af4, addr), "big"), 4
                except (OSError, ValueError):
                    continue
                if fam in chosen or fam not in by_family:
                    continue
                low, high = bounds[fam]
                if not low <= ip <= high or ip in reserved[fam]:
                    continue  # the node block changed (pin); the pod gets a fresh address
                holder = taken[fam].get(ip)
                if holder is not None:
                    if (fam, ip) in pinned and source == "recorded":
                        raise PlanError(
                            f"ip {_address(ip, fam)} pinned for pod {holder} on {node} is in use by pod {pod} "
                            f"({source}); pin another address, or remove pod {pod} first"
                        )
                    continue
                taken[fam][ip] = pod
                chosen[fam] = ip
                missing -= 1
                if fam == 4:
                    if not slash:
                        texts.setdefault(pod, {})[4] = text + suffix[4]
                    elif slash + plen == suffix[4]:
                        texts.setdefault(pod, {})[4] = text

    for fam, block in by_family.items():
        if not missing:
            break  # a rerun: every pod kept its address
        candidate = block.first + 2
        for pod in sorted(pods):
            if fam in result[pod]:
                continue
            while candidate in taken[fam]:
                candidate += 1
            if fam in ceilings and candidate > ceilings[fam][0]:
                room = ceilings[fam][0] - block.first - 1
                raise PlanError(
                    f"{node} has {len(pods)} pods but its block {block} holds only {room} pod addresses "
                    f"below {ceilings[fam][1]}, and none is left for pod {pod}; run fewer pods, give "
                    "CNI containers a smaller share (flatnet_cni_range 1/4, 1/8, ...) or use a larger node block"
                )
            taken[fam][candidate] = pod
            result[pod][fam] = candidate
            candidate += 1
    # Integer ops format an address several times faster than netaddr or ipaddress: this loop
    # runs once per pod of the cluster. Kept claims reuse their text.
    fams = [(b.version, suffix[b.version]) for b in blocks]  # netaddr properties cost a call each
    out = {}
    for pod in sorted(pods):
        chosen = result[pod]
        kept = texts.get(pod)
        if kept is not None and len(kept) == len(fams):
            out[pod] = [kept[fam] for fam, _tail in fams]
        else:
            out[pod] = [(kept or {}).get(fam) or _address(int(chosen[fam]), fam) + tail for fam, tail in fams]
    return out


def pod_ips(node_cidr, pods, existing=None, pins=None) -> dict[str, list[str]]:
    """Plan pod addresses in a node block (str or [v4, v6]): ``{pod: ["ip/prefix", ...]}``.

    ``pods`` is a list of pod names; ``existing`` and ``pins`` map pod name to an address
    or a list of addresses (one per family). Existing addresses are kept when still valid.
    """
    require_netaddr()
    blocks = _by_family([parse_network(c, "node pod CIDR") for c in _as_list(node_cidr)], "node pod CIDR")
    if not blocks:
        raise PlanError("node pod CIDR is empty; pass the node's block, e.g. 10.244.0.0/24")
    names = list(_as_list(pods))
    _check_pod_names("the node", names)
    return _assign_pod_ips("the node", blocks, names, pins or {}, [("existing", existing or {})])


# --------------------------------------------------------------------------- input checks
# One rule per kind of input. Every check raises PlanError with one message that names the
# variable as the user wrote it, the bad value and the fix; the plan action runs them all
# before it plans anything, so a bad value never reaches a node.


def _type_name(value) -> str:
    """A YAML-ish name of a value's type for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "mapping"
    return {"str": "string", "int": "integer"}.get(type(value).__name__, type(value).__name__)


def _integer(value, what: str, low: int | None = None, high: int | None = None, kind: str = "an integer",
             where: str = "", example=None) -> int:
    """An integer from an int or a string of digits (``-e var=5`` gives "5"); never a bool."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
        number = int(value)
    if number is None:
        rng = f" from {low} to {high}" if low is not None and high is not None else (
            f" of {low} or more" if low is not None else "")
        eg = f", e.g. {example}" if example is not None else ""
        raise PlanError(f"{what} {value!r}{where} is not an integer; give {kind}{rng}{eg}")
    if (low is not None and number < low) or (high is not None and number > high):
        if high is None:
            raise PlanError(f"{what} {value!r}{where} is out of range; use {kind} of {low} or more")
        raise PlanError(f"{what} {value!r}{where} is out of range; use {kind} from {low} to {high}")
    return number


def check_bool(value, what: str, where: str = "") -> bool:
    """A boolean, spelt as Ansible's ``bool`` type accepts it (true/false, yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        if value.lower() in _BOOL_TRUE:
            return True
        if value.lower() in _BOOL_FALSE:
            return False
    raise PlanError(f"{what} {value!r}{where} is not a boolean; set it to true or false")


def check_link_name(value, what: str, where: str = "") -> str:
    """A Linux interface name the collection may make or use in a batch line."""
    problem = link_name_problem(value)
    if problem is not None:
        raise PlanError(
            f"{what} {value!r}{where} {problem}; choose another name of at most 15 letters, digits, "
            "'_', '.' or '-', e.g. cni0 or flatnet.1"
        )
    return value


def check_cluster_name(value, what: str = ROLE_VARS["cluster_name"]) -> str:
    """The cluster name: part of the plan file's name, so no '/', spaces or dots first."""
    if not isinstance(value, str) or not CLUSTER_NAME_RE.match(value):
        raise PlanError(
            f"{what} {value!r} is not allowed: it becomes part of a file name, so use 1-63 letters, "
            "digits, '_', '.' or '-' starting with a letter or digit, e.g. flatnet or lab-1"
        )
    return value


def check_group(value, what: str = ROLE_VARS["group"]) -> str:
    """The inventory group of the cluster: a plain group name, never a host pattern."""
    if not isinstance(value, str) or not GROUP_NAME_RE.match(value):
        raise PlanError(
            f"{what} {value!r} is not an inventory group name: it is used as a host pattern, so use "
            "letters, digits, '_', '.' and '-' only (no ':', ',', '!', '&', '*' or spaces), e.g. flatnet_nodes"
        )
    return value


def check_command(node: str, pod: str, command, v: Mapping = ROLE_VARS):
    """A pod's ``command``: None, a non-empty list of strings (integers become strings; other
    types, floats included, are refused, since str() would not give back what was written), or
    a string that shlex splits into at least one word. Returns what the plan keeps."""
    where = f"command of pod {pod} on {node} ({v['pods']})"
    if command is None:
        return None
    if isinstance(command, str):
        if "\0" in command:
            raise PlanError(
                f"{where} {command!r} holds a NUL character, which no command line can carry; remove it"
            )
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise PlanError(
                f"{where} {command!r} does not split into arguments ({exc}): close the quote, or give "
                "the command as a list of strings"
            ) from None
        if not words:
            raise PlanError(f"{where} {command!r} is empty; give the program to run, or leave command out")
        return command
    if isinstance(command, (list, tuple)):
        if not command:
            raise PlanError(f"{where} [] is empty; give the program to run, or leave command out")
        argv = []
        for index, item in enumerate(command):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise PlanError(
                    f"{where}: argument {index} {item!r} is a {_type_name(item)}, not a string; "
                    "write every argument as a string (quote it)"
                )
            text = str(item)
            if "\0" in text:
                raise PlanError(f"{where}: argument {index} {text!r} holds a NUL character; remove it")
            argv.append(text)
        if not argv[0]:
            raise PlanError(f"{where}: the program (argument 0) is an empty string; name the program to run")
        return argv
    raise PlanError(
        f"{where} {command!r} is neither a list of strings nor a string; give e.g. [sleep, '3600'] "
        "or one string such as 'sleep 3600'"
    )


def _pod_entries(node: str, request: Mapping, default_per_node, v: Mapping = ROLE_VARS) -> list[dict]:
    """The pods of one node request as ``[{name, ip, command}]``: explicit entries (a name
    or a mapping of the keys in POD_KEYS), then ``pods_per_node`` generated ones."""
    raw = request.get("pods")
    if raw is None:
        raw = []
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
        raise PlanError(
            f"{v['pods']} of {node} {raw!r} is not a list; write a list of pod names or "
            "{name, ip, command} entries, e.g. [web, {name: db, command: 'sleep 3600'}]"
        )
    pods = []
    origin: dict[str, str] = {}
    for entry in raw:
        if isinstance(entry, str):
            entry = {"name": entry}
        elif not isinstance(entry, Mapping):
            raise PlanError(
                f"{v['pods']} of {node}: entry {entry!r} is not a pod name or a {{name, ip, command}} mapping"
            )
        if "name" not in entry:
            raise PlanError(f"{v['pods']} of {node}: entry {dict(entry)!r} has no name; add name: <pod name>")
        name = entry["name"]
        if not is_pod_name(name):
            _check_pod_names(node, [name], v)
        for key in entry:
            if key not in POD_KEYS:
                close = difflib.get_close_matches(str(key), POD_KEYS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise PlanError(
                    f"pod {name} on {node} ({v['pods']}) has an unknown key {key!r}{hint}; a pod entry takes only "
                    f"{', '.join(POD_KEYS)}"
                )
        if name in origin:
            raise PlanError(
                f"pod {name} is listed twice on {node} ({v['pods']}); pod names must be unique per node"
            )
        origin[name] = v["pods"]
        pods.append({
            "name": name,
            "ip": entry.get("ip"),
            "command": check_command(node, name, entry.get("command"), v),
            "labels": entry.get("labels"),
            "_from": v["pods"],
        })
    per_node = request.get("pods_per_node", default_per_node)
    count = _integer(0 if per_node is None else per_node, v["pods_per_node"], 0, None, "a count",
                     f" on {node}", 3)
    for index in range(1, count + 1):
        name = f"{node}-pod-{index}"
        if not is_pod_name(name):
            raise PlanError(
                f"{v['pods_per_node']} of {node} makes pods named like {name!r}, which is not a DNS label "
                f"because the node name {node!r} is not one; list the pods in {v['pods']} instead"
            )
        if name in origin:
            raise PlanError(
                f"pod {name} is listed twice on {node}: in {origin[name]} and made by "
                f"{v['pods_per_node']} {count}; remove it from {v['pods']}"
            )
        origin[name] = v["pods_per_node"]
        pods.append({"name": name, "ip": None, "command": None, "_from": v["pods_per_node"]})
    return pods


def _check_backend(backend, vxlan, v: Mapping = PLAIN_NAMES) -> dict:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise PlanError(f"{v['backend']} {backend!r} is not supported; use one of: {', '.join(BACKENDS)}")
    if vxlan is not None and not isinstance(vxlan, Mapping):
        raise PlanError(f"vxlan {vxlan!r} is not a mapping of vni, port and device")
    out = dict(DEFAULT_VXLAN)
    out.update({k: val for k, val in (vxlan or {}).items() if val is not None})
    unknown = sorted(set(out) - set(DEFAULT_VXLAN))
    if unknown:
        raise PlanError(f"vxlan has unknown keys {', '.join(map(repr, unknown))}; it takes vni, port and device")
    out["vni"] = _integer(out["vni"], v["vni"], 1, 16777215, example=1)
    out["port"] = _integer(out["port"], v["port"], 1, 65535, "a UDP port", example=8472)
    check_link_name(out["device"], v["device"])
    return {"vni": out["vni"], "port": out["port"], "device": out["device"]}


def _underlay(node: str, data) -> dict:
    data = dict(data or {})
    ip_raw = data.get("ip")
    if not ip_raw:
        raise PlanError(
            f"node {node} has no underlay IP; run flatnet.cluster.node_facts on it or set "
            "flatnet_underlay_interface / flatnet_underlay_ip for it"
        )
    ip = parse_address(str(ip_raw), f"underlay IP of {node}")
    prefix = data.get("prefix")
    if prefix is None:
        prefix = 32 if ip.version == 4 else 128
    try:
        network = IPNetwork(str(data.get("network") or f"{ip}/{prefix}")).cidr
    except (AddrFormatError, ValueError, TypeError):
        raise PlanError(
            f"underlay network {data.get('network')!r} of {node} is not a CIDR; re-gather facts with "
            "flatnet.cluster.node_facts"
        ) from None
    mtu = _integer(data.get("mtu") or 1500, f"underlay MTU of {node}", 68, None, "an MTU")
    return {
        "interface": data.get("interface"),
        "ip": str(ip),
        "prefix": network.prefixlen,
        "network": str(network),
        "mtu": mtu,
        "_ip": ip,
        "_net": network,
        "_chosen_by": data.get("chosen_by"),
    }


def _adjacent(a: dict, b: dict) -> bool:
    return a["_ip"].version == b["_ip"].version and a["_ip"] in b["_net"] and b["_ip"] in a["_net"]


def _nodes_with_a_remote_peer(names, underlays) -> list[str]:
    """Nodes (sorted) with at least one peer that is not on-link both ways (_adjacent), in
    O(nodes x distinct underlay networks) instead of comparing every pair."""
    by_net: dict[str, list[str]] = {}
    for name in names:
        by_net.setdefault(underlays[name]["network"], []).append(name)
    nets = {key: underlays[members[0]]["_net"] for key, members in by_net.items()}
    # inside[a][b]: every node of network a has its IP inside network b.
    inside = {a: {b: all(underlays[n]["_ip"].version == nets[b].version and underlays[n]["_ip"] in nets[b]
                         for n in by_net[a])
                  for b in nets}
              for a in nets}
    result = []
    for name in names:
        own, ip = underlays[name]["network"], underlays[name]["_ip"]
        for other, net in nets.items():
            if other == own and len(by_net[other]) == 1:
                continue
            if not (ip.version == net.version and ip in net and inside[other][own]):
                result.append(name)
                break
    return sorted(result)


@functools.lru_cache(maxsize=65536)
def _parsed_underlay(ip: str, network: str):
    return ipaddress.ip_address(ip), ipaddress.ip_network(network, strict=False)


def plan_json(plan: Mapping) -> str:
    """The plan file's text: the cluster settings indented, then one line per node, so the file
    stays small (about 1 KB a node with 10 pods) and a diff shows which nodes changed."""
    head = {k: val for k, val in plan.items() if k != "nodes"}
    lines = ["{"]
    for key in sorted(head):
        lines.append(f"  {json.dumps(key)}: {json.dumps(head[key], sort_keys=True)},")
    nodes = plan.get("nodes") or {}
    lines.append('  "nodes": {')
    names = sorted(nodes)
    for i, name in enumerate(names):
        comma = "," if i < len(names) - 1 else ""
        lines.append(f"    {json.dumps(name)}: {json.dumps(nodes[name], sort_keys=True, separators=(',', ':'))}{comma}")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def peers_of(plan: Mapping, name: str) -> list[dict]:
    """The peer view of node ``name``: every other node of ``plan["nodes"]``, sorted by name,
    as ``{name, mode, underlay_ip, pod_cidrs, vtep_ips, vtep_mac}``; ``mode`` is ``direct``
    (a route via the peer's underlay IP), ``vxlan``, or ``bgp`` (BIRD learns the route). O(nodes): the plan holds each node once
    and every node derives its own view."""
    nodes = plan.get("nodes") or {}
    if name not in nodes:
        raise PlanError(f"node {name} is not in the plan; run the flatnet.cluster.plan role for it first")
    backend = plan.get("backend", "host-gw")
    me = nodes[name].get("underlay") or {}
    my_ip, my_net = _parsed_underlay(str(me.get("ip")), str(me.get("network") or me.get("ip")))
    v6_over_v4 = my_ip.version == 4 and any(":" in str(c) for c in plan.get("cluster_cidrs") or [])
    peers = []
    for other in sorted(nodes):
        if other == name:
            continue
        entry = nodes[other]
        under = entry.get("underlay") or {}
        ip, net = _parsed_underlay(str(under.get("ip")), str(under.get("network") or under.get("ip")))
        adjacent = ip.version == my_ip.version and ip in my_net and my_ip in net
        direct = backend == "host-gw" or (backend == "auto" and adjacent and not v6_over_v4)
        # bgp: BIRD serves the peers on this node's underlay subnet (an on-link next hop);
        # the others are tunnelled as with auto (plugin_utils/bgp.py, docs/backends.md).
        served = backend == "bgp" and adjacent and not v6_over_v4
        peers.append({
            "name": other,
            "mode": "bgp" if served else "direct" if direct else "vxlan",
            "underlay_ip": under.get("ip"),
            "pod_cidrs": list(entry.get("pod_cidrs") or []),
            "vtep_ips": list(entry.get("vtep_ips") or []),
            "vtep_mac": entry.get("vtep_mac"),
        })
    return peers


def _check_link_names(node: str, bridge: str, device: str, underlay: dict, v: Mapping) -> None:
    """The bridge, the VXLAN device and the underlay interface of a node are three links."""
    check_link_name(bridge, v["bridge"], f" on {node}")
    if bridge == device:
        raise PlanError(
            f"{v['bridge']} and {v['device']} are both {bridge!r} on {node}; the bridge and the VXLAN "
            f"device are two links: give them different names (defaults: {DEFAULT_BRIDGE}, {DEFAULT_VXLAN['device']})"
        )
    iface = underlay.get("interface")
    if iface is None:
        return
    chosen = underlay.get("_chosen_by")
    how = f"set by {v['underlay_interface']}" if chosen == "interface" else (
        f"found from the {chosen.replace('-', ' ')}" if isinstance(chosen, str) else "found by node_facts")
    problem = link_name_problem(iface)
    if problem is not None:
        raise PlanError(
            f"the underlay interface {iface!r} of {node} ({how}) {problem}; the collection names it in "
            f"ip commands: set {v['underlay_interface']} (or flatnet_underlay_ip) to another interface"
        )
    for label, name in ((v["bridge"], bridge), (v["device"], device)):
        if name == iface:
            fix = f"choose another {label}"
            if chosen == "interface":
                fix += f", or set {v['underlay_interface']} to the link that carries node-to-node traffic"
            raise PlanError(
                f"{label} {name!r} is the underlay interface of {node} ({how}); the collection would take "
                f"over the link that carries node-to-node traffic: {fix}"
            )


def _check_unique_pods(pods_of: Mapping) -> None:
    """Pod names are unique across the cluster: reports (and later DNS) name pods alone.
    ``pods_of``: {node: [(pod name, where it comes from)]}."""
    seen: dict[str, tuple[str, str]] = {}
    for node in sorted(pods_of):
        for name, source in pods_of[node]:
            if name in seen and seen[name][0] != node:
                other, other_source = seen[name]
                raise PlanError(
                    f"pod {name} is declared on both {other} ({other_source}) and {node} ({source}); pod names "
                    "must be unique across the cluster (reports and DNS name a pod without its node): "
                    "rename one of them"
                )
            seen.setdefault(name, (node, source))


def build_plan(
    nodes: Mapping,
    cluster_cidr=DEFAULT_CLUSTER_CIDR,
    node_prefix: int = DEFAULT_NODE_PREFIX,
    node_prefix_v6: int = DEFAULT_NODE_PREFIX_V6,
    service_cidr=DEFAULT_SERVICE_CIDR,
    reserved_cidrs=None,
    backend: str = "host-gw",
    mtu=None,
    vxlan=None,
    masquerade: bool = True,
    inventory_nodes=None,
    cached=None,
    bridge: str = DEFAULT_BRIDGE,
    pods_per_node=0,
    cni=False,
    cni_range=None,
) -> dict:
    """Build ``flatnet_plan`` (see docs/design.md) for the nodes of this play.

    ``nodes``: {name: {underlay, recorded, pod_cidr, pods, pods_per_node, bridge, prune,
    firewall}}; ``cached``: an earlier plan (or None); ``inventory_nodes``: every node of the
    cluster, in or out of this play. ``bridge`` and ``pods_per_node`` apply to nodes whose
    request has no value of its own. Every input is checked first; messages name the role
    variables (``flatnet_*``) that feed each one. ``cni`` splits each node block between the
    collection's pods and CNI containers (``cni_range``: the share, "1/N"; plugin_utils/cni.py).
    """
    require_netaddr()
    # The plan allocates hundreds of thousands of small objects and makes no cycles: the
    # cyclic collector would only rescan them (and the cached plan) again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build_plan(nodes, cluster_cidr, node_prefix, node_prefix_v6, service_cidr, reserved_cidrs,
                           backend, mtu, vxlan, masquerade, inventory_nodes, cached, bridge, pods_per_node,
                           cni, cni_range)
    finally:
        if collecting:
            gc.enable()


def _build_plan(nodes, cluster_cidr, node_prefix, node_prefix_v6, service_cidr, reserved_cidrs,
                backend, mtu, vxlan, masquerade, inventory_nodes, cached, bridge, pods_per_node,
                cni=False, cni_range=None) -> dict:
    v = ROLE_VARS
    cni = check_bool(cni, _cni.ENABLE_VAR)
    try:
        cni_denom = _cni.parse_share(_cni.DEFAULT_SHARE if cni_range is None else cni_range)
    except _cni.CNIPlanError as exc:
        raise PlanError(str(exc)) from None
    vxlan_out = _check_backend(backend, vxlan, v)
    masquerade = check_bool(masquerade, v["masquerade"])
    given_mtu = None if mtu is None else _integer(mtu, v["mtu"], 1, MAX_MTU, "an MTU", example=1450)
    clusters = parse_cluster_cidrs(cluster_cidr, v["cluster_cidr"])
    prefixes = _check_prefixes(clusters, {4: node_prefix, 6: node_prefix_v6}, v)
    if isinstance(service_cidr, Mapping):
        raise PlanError(f"{v['service_cidr']} {service_cidr!r} is not a CIDR; write e.g. 10.96.0.0/12")
    services = _by_family(
        [parse_network(s, v["service_cidr"]) for s in _as_list(service_cidr)], v["service_cidr"]
    )
    if isinstance(reserved_cidrs, (str, Mapping)):
        raise PlanError(f"{v['reserved_cidrs']} {reserved_cidrs!r} is not a list; write e.g. [172.16.0.0/12]")
    reserved = [parse_network(r, f"{v['reserved_cidrs']} entry") for r in _as_list(reserved_cidrs)]

    if not isinstance(nodes or {}, Mapping):
        raise PlanError(f"nodes {nodes!r} is not a mapping of node name to its request")
    requests = {}
    for name, req in (nodes or {}).items():
        if req is not None and not isinstance(req, Mapping):
            raise PlanError(f"the request of node {name} {req!r} is not a mapping")
        requests[name] = dict(req or {})
    nodes = requests
    in_play = _node_names(nodes)
    for name in in_play:
        for key in ("prune", "firewall", "vxlan_guard"):
            if nodes[name].get(key) is not None:
                check_bool(nodes[name][key], v[key], f" on {name}")
        nodes[name]["pods"] = _pod_entries(name, nodes[name], pods_per_node, v)
    inventory = set(str(n) for n in _as_list(inventory_nodes)) | set(in_play)
    cached_nodes = {}
    if isinstance(cached, Mapping) and isinstance(cached.get("nodes"), Mapping):
        # dict first: an isinstance() against an ABC alone costs a rerun a slow call per node.
        cached_nodes = {str(k): val for k, val in cached["nodes"].items()
                        if isinstance(val, (dict, Mapping))}
    kept = sorted(n for n in cached_nodes if n not in nodes and n in inventory)
    all_nodes = sorted(in_play + kept)

    underlays = {}
    for name in in_play:
        underlays[name] = _underlay(name, (nodes[name] or {}).get("underlay"))
    for name in kept:
        underlays[name] = _underlay(name, cached_nodes[name].get("underlay"))
    by_ip: dict[str, str] = {}
    for name in all_nodes:
        ip = underlays[name]["ip"]
        if ip in by_ip:
            raise PlanError(
                f"nodes {by_ip[ip]} and {name} have the same underlay IP {ip}; give each node its "
                "own address (flatnet_underlay_ip / flatnet_underlay_interface)"
            )
        by_ip[ip] = name
    families = {underlays[n]["_ip"].version for n in all_nodes}
    if len(families) > 1:
        v4 = next(n for n in all_nodes if underlays[n]["_ip"].version == 4)
        v6 = next(n for n in all_nodes if underlays[n]["_ip"].version == 6)
        raise PlanError(
            f"underlay IPs mix IPv4 ({v4}: {underlays[v4]['ip']}) and IPv6 ({v6}: {underlays[v6]['ip']}); "
            "all nodes must reach each other over one family: set flatnet_underlay_ip accordingly"
        )

    # Before the CIDR checks: an underlay interface that is the bridge (a flatnet_underlay_interface
    # pointing at cni0) is best told as such, not as the bridge's network overlapping the cluster.
    bridges = {}
    for name in in_play:
        bridges[name] = nodes[name].get("bridge") or bridge
        _check_link_names(name, bridges[name], vxlan_out["device"], underlays[name], v)

    disjoint = [(v["service_cidr"], s) for s in services]
    disjoint += [(f"the underlay network of {n}", underlays[n]["_net"]) for n in all_nodes]
    disjoint += [(f"{v['reserved_cidrs']} entry", r) for r in reserved]
    _check_disjoint(clusters, disjoint, v)

    pods_of = {name: [(p["name"], p["_from"]) for p in nodes[name]["pods"]] for name in in_play}
    for name in kept:
        pods_of[name] = [(p["name"], "cached plan; node not in this play")
                         for p in (cached_nodes[name].get("pods") or [])
                         if isinstance(p, Mapping) and isinstance(p.get("name"), str)]
    _check_unique_pods(pods_of)

    # Node blocks: pins, then recorded on the node, then the cached plan.
    claims = []
    for name in in_play:
        pin = (nodes[name] or {}).get("pod_cidr")
        if pin:
            claims.append(_Claim(name, pin, f"pinned with {v['pod_cidr']}", "pin"))
    for name in in_play:
        recorded = ((nodes[name] or {}).get("recorded") or {}).get("pod_cidrs")
        if recorded:
            claims.append(_Claim(name, recorded, f"recorded on {name}", "hard"))
    for name in kept:
        claims.append(_Claim(name, cached_nodes[name].get("pod_cidrs"),
                             "cached plan; node not in this play", "hard"))
    for name in in_play:
        if name in cached_nodes:
            claims.append(_Claim(name, cached_nodes[name].get("pod_cidrs"), "cached plan", "soft"))
    blocks = _assign_blocks(clusters, prefixes, all_nodes, claims, v)

    out_nodes = {}
    for name in all_nodes:
        node_blocks = [blocks[name][c.version] for c in clusters]
        if name in nodes:
            request = nodes[name] or {}
            pod_reqs = request.get("pods") or []
            recorded_pods = (request.get("recorded") or {}).get("pods") or {}
            # The cached pod entries go as they are: building a {pod: ips} map for every node
            # would cost a rerun more than reading the claims themselves.
            cached_pods = cached_nodes.get(name, {}).get("pods") or []
            if not isinstance(cached_pods, list):
                cached_pods = {}
            containers = _cni.container_ips(request.get("cni_containers"), name)
            splits = None
            try:
                if cni:
                    splits = {b.version: _cni.split_block(b, cni_denom, name) for b in node_blocks}
            except _cni.CNIPlanError as exc:
                raise PlanError(str(exc)) from None
            ceilings = {
                fam: (sp["pod_last"], f"the CNI range {sp['cni_cidr']} ({_cni.SHARE_VAR} 1/{cni_denom})")
                for fam, sp in (splits or {}).items()
            }
            ips = _assign_pod_ips(
                name,
                node_blocks,
                [p["name"] for p in pod_reqs],
                {p["name"]: p.get("ip") for p in pod_reqs if p.get("ip")},
                [("recorded", recorded_pods), ("cached", cached_pods)],
                v,
                ceilings,
            )
            commands = {p["name"]: p.get("command") for p in pod_reqs}
            labels = {p["name"]: p.get("labels") for p in pod_reqs}
            pods_out = [{"name": p, "ips": ips[p], "command": commands[p]} for p in sorted(ips)]
            for pod in pods_out:  # services select pods by label (plugin_utils/services.py)
                if isinstance(labels.get(pod["name"]), Mapping) and labels[pod["name"]]:
                    pod["labels"] = {str(k): str(val) for k, val in labels[pod["name"]].items()}
            cni_out = _node_cni(name, node_blocks, splits, ips, containers,
                                recorded_blocks=(request.get("recorded") or {}).get("pod_cidrs"))
        else:
            pods_out = [dict(p) for p in (cached_nodes[name].get("pods") or []) if isinstance(p, Mapping)]
        underlay = {k: val for k, val in underlays[name].items() if not k.startswith("_")}
        # The blocks are canonical here: no re-normalising (gateway() and vtep_ip() take any CIDR).
        firsts = [(b.first, b.version, b.prefixlen) for b in node_blocks]
        out_nodes[name] = {
            "pod_cidrs": [str(b) for b in node_blocks],
            "gateways": [f"{_address(first + 1, fam)}/{plen}" for first, fam, plen in firsts],
            "vtep_ips": [_address(first, fam) for first, fam, _plen in firsts],
            "vtep_mac": vtep_mac(underlays[name]["ip"]),
            "underlay": underlay,
            "pods": pods_out,
        }
        if name in nodes and cni_out is not None:
            out_nodes[name]["cni"] = cni_out
        elif name not in nodes and isinstance(cached_nodes[name].get("cni"), Mapping):
            out_nodes[name]["cni"] = dict(cached_nodes[name]["cni"])
        if name in bridges:
            out_nodes[name]["bridge"] = bridges[name]
        elif isinstance(cached_nodes.get(name, {}).get("bridge"), str):
            out_nodes[name]["bridge"] = cached_nodes[name]["bridge"]

    # Peers are not stored per node (that is nodes² entries): each node's view is derived where
    # it is used (peers_of). Here only what the plan must refuse or size: host-gw across
    # networks, and which nodes tunnel, in O(nodes x underlay networks).
    v6_over_v4 = families == {4} and any(c.version == 6 for c in clusters)
    if backend == "host-gw" and v6_over_v4 and len(all_nodes) > 1:
        name = all_nodes[0]
        raise PlanError(
            "backend host-gw cannot carry IPv6 pod traffic over the IPv4 underlay "
            f"({name} {underlays[name]['ip']}): use backend vxlan or auto for a dual-stack cluster"
        )
    apart = _nodes_with_a_remote_peer(all_nodes, underlays)
    if backend == "host-gw" and apart:
        a = apart[0]
        b = next(o for o in all_nodes if o != a and not _adjacent(underlays[a], underlays[o]))
        a, b = sorted((a, b))
        raise PlanError(
            f"backend host-gw needs nodes on one underlay network, but {a} "
            f"({underlays[a]['network']}) and {b} ({underlays[b]['network']}) are not; "
            "use backend vxlan or auto"
        )
    if len(all_nodes) < 2 or backend == "host-gw":
        tunnelling = set()
    elif backend == "vxlan" or v6_over_v4:
        tunnelling = set(all_nodes)
    else:
        tunnelling = set(apart)
    any_vxlan = bool(tunnelling)

    if mtu is None:
        lowest = min(underlays[n]["mtu"] for n in all_nodes) if all_nodes else 1500
        family = next(iter(families)) if families else 4
        pod_mtu = lowest - VXLAN_OVERHEAD[family] if any_vxlan else lowest
        origin = f"computed from the underlay MTU {lowest}" + (" minus VXLAN overhead" if any_vxlan else "")
    else:
        pod_mtu = given_mtu
        origin = "given"
    dual_or_v6 = any(c.version == 6 for c in clusters)
    floor = MIN_MTU_V6 if dual_or_v6 else MIN_MTU
    if pod_mtu < floor:
        why = "IPv6 needs at least 1280" if dual_or_v6 else "IPv4 needs at least 576"
        raise PlanError(
            f"pod MTU {pod_mtu} ({origin}) is too small: {why}; raise the underlay MTU or set "
            f"{v['mtu']} to {floor} or more"
        )
    if pod_mtu > MAX_MTU:
        raise PlanError(
            f"pod MTU {pod_mtu} ({origin}) is larger than {MAX_MTU}; set {v['mtu']} to a real link MTU "
            "such as 1500 or 9000"
        )
    if mtu is not None:
        # An explicit MTU must fit every node's underlay, less the encapsulation where the
        # node tunnels (underlay MTUs are measured on each node by node_facts).
        for name in all_nodes:
            tunnels = name in tunnelling
            overhead = VXLAN_OVERHEAD[underlays[name]["_ip"].version] if tunnels else 0
            limit = underlays[name]["mtu"] - overhead
            if pod_mtu > limit:
                why = (f", less {overhead} bytes of VXLAN encapsulation for its tunnelled peers" if tunnels else "")
                raise PlanError(
                    f"{v['mtu']} {pod_mtu} is larger than {name} can carry: its underlay MTU is "
                    f"{underlays[name]['mtu']}{why}, so at most {limit}; set {v['mtu']} to {limit} or less, "
                    "or leave it unset (null) to compute it"
                )

    service_out = [str(s) for s in services]
    plan = {
        "cluster_cidrs": [str(c) for c in clusters],
        "service_cidr": service_out[0] if len(service_out) == 1 else service_out,
        "backend": backend,
        "mtu": pod_mtu,
        "masquerade": masquerade,
        "vxlan": vxlan_out,
        "nodes": out_nodes,
    }
    if cni:  # only then: plans without CNI keep their exact shape
        plan["cni"] = {"enabled": True, "range": f"1/{cni_denom}", "network": _cni.NETWORK_NAME}
    return plan


def _node_cni(name, node_blocks, splits, ips, containers, recorded_blocks=None):
    """The node's CNI plan entry (None when CNI is off), refusing to take containers' addresses."""
    planned_blocks = [str(b) for b in node_blocks]
    moved = bool(recorded_blocks) and list(recorded_blocks) != planned_blocks
    why = (f"moving {name} from {', '.join(map(str, recorded_blocks))} to {', '.join(planned_blocks)}" if moved
           else f"{_cni.ENABLE_VAR}: false" if splits is None else f"this {_cni.SHARE_VAR}")
    try:
        _cni.check_containers(name, node_blocks, splits, containers, why)
        planned = {ip.split("/")[0]: pod for pod, addrs in ips.items() for ip in addrs}
        for ip, owner in sorted(containers.items()):
            if ip in planned:
                raise _cni.CNIPlanError(
                    f"{name}: pod {planned[ip]} would get {ip}, which container {owner[:12]} holds; "
                    "pin the pod to another address or remove that container first"
                )
        if splits is None:
            return None
        return _cni.cni_plan(name, node_blocks, splits, [a for addrs in ips.values() for a in addrs],
                             [gateway(b) for b in node_blocks])
    except _cni.CNIPlanError as exc:
        raise PlanError(str(exc)) from None
