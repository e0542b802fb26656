# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node blocks (controller side, pure functions): one pod CIDR per node and cluster family,
and the addresses of a block that are the node's own (gateway, VTEP) rather than pods'.

Stability sources, highest first: pins, blocks recorded on the node, the cached plan, then
the lowest free block (nodes in sorted name order).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping

from ansible_collections.flatnet.cluster.plugins.module_utils.names import derived_mac
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import (
    _FAMILY_NAME,
    DEFAULT_NODE_PREFIX,
    DEFAULT_NODE_PREFIX_V6,
    PLAIN_NAMES,
    IPNetwork,
    PlanError,
    _as_list,
    _integer,
    _overlaps,
    parse_address,
    parse_cluster_cidrs,
    parse_network,
    require_netaddr,
)

# kube-controller-manager's limit: it keeps the number of v6 blocks enumerable.
MAX_V6_PREFIX_DELTA = 16


# --------------------------------------------------------------------------- addresses of a block


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
