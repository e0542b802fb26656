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

import re
from collections.abc import Iterable, Mapping

from ansible_collections.flatnet.cluster.plugins.module_utils.names import derived_mac

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
BACKENDS = ("host-gw", "vxlan", "auto")
# VXLAN encapsulation cost: outer IP + UDP + VXLAN + inner Ethernet.
VXLAN_OVERHEAD = {4: 50, 6: 70}
MIN_MTU = 576
MIN_MTU_V6 = 1280
# kube-controller-manager's limit: it keeps the number of v6 blocks enumerable.
MAX_V6_PREFIX_DELTA = 16
POD_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LINK_NAME_RE = re.compile(r"^[^\s/:]{1,15}$")

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


def parse_network(value, what: str) -> IPNetwork:
    """Parse a CIDR that must be a network (not a host address inside one)."""
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
            f"{what} {value} is a host address, not a network; did you mean {net.cidr}?"
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


def parse_cluster_cidrs(value) -> list[IPNetwork]:
    """Parse ``cluster_cidr``: a string or a list of one IPv4 and/or one IPv6 CIDR (v4 first)."""
    items = _as_list(value)
    if not items:
        raise PlanError("cluster_cidr is empty; set it, e.g. 10.244.0.0/16 or [10.244.0.0/16, fd00:10:244::/56]")
    return _by_family([parse_network(v, "cluster_cidr") for v in items], "cluster_cidr")


# --------------------------------------------------------------------------- small rules


def gateway(cidr) -> str:
    """Bridge address of a node block: its first host address, with the block's prefix."""
    net = IPNetwork(str(cidr)).cidr
    return f"{IPAddress(net.first + 1, net.version)}/{net.prefixlen}"


def vtep_ip(cidr) -> str:
    """VTEP address of a node block: the block's network address (used as /32 or /128)."""
    return str(IPNetwork(str(cidr)).cidr.network)


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
    net = IPNetwork(str(cidr)).cidr
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


def _check_prefixes(clusters: list[IPNetwork], prefixes: dict[int, int]) -> None:
    for cluster in clusters:
        fam = cluster.version
        prefix = prefixes[fam]
        opt = "node_prefix" if fam == 4 else "node_prefix_v6"
        bits = 32 if fam == 4 else 128
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= bits:
            raise PlanError(f"{opt} {prefix!r} is not a prefix length between 0 and {bits}")
        if prefix <= cluster.prefixlen:
            raise PlanError(
                f"{opt} /{prefix} is not longer than cluster_cidr {cluster}; node blocks must be "
                f"smaller than the cluster range: set {opt} to at least {cluster.prefixlen + 1}"
            )
        if fam == 6 and prefix - cluster.prefixlen > MAX_V6_PREFIX_DELTA:
            raise PlanError(
                f"node_prefix_v6 /{prefix} is {prefix - cluster.prefixlen} bits longer than cluster_cidr "
                f"{cluster}; at most {MAX_V6_PREFIX_DELTA} bits are allowed: set node_prefix_v6 to "
                f"{cluster.prefixlen + MAX_V6_PREFIX_DELTA} or less, or use a longer IPv6 cluster prefix"
            )
        if usable_pod_count(f"{cluster.network}/{prefix}") < 1:
            longest = bits - 2  # v4 /30 and v6 /126 still leave pod addresses
            raise PlanError(
                f"{opt} /{prefix} leaves no address for pods (network, gateway"
                f"{' and broadcast' if fam == 4 else ''} are reserved); use /{longest} or shorter"
            )


def _check_disjoint(clusters: list[IPNetwork], others: list[tuple[str, IPNetwork]]) -> None:
    for cluster in clusters:
        for label, other in others:
            if _overlaps(cluster, other):
                raise PlanError(
                    f"cluster_cidr {cluster} overlaps {label} {other}; pods would shadow those "
                    f"addresses: choose a cluster_cidr that does not contain or sit inside {other}"
                )


def _assign_blocks(
    clusters: list[IPNetwork],
    prefixes: dict[int, int],
    nodes: list[str],
    claims: list[_Claim],
) -> dict[str, dict[int, IPNetwork]]:
    """Give each node one block per cluster family; claims are in priority order."""
    cluster_of = {c.version: c for c in clusters}
    taken: dict[int, dict[int, tuple[str, str]]] = {f: {} for f in cluster_of}  # first -> (node, source)
    blocks: dict[str, dict[int, IPNetwork]] = {n: {} for n in nodes}
    pinned_family: dict[tuple[str, int], str] = {}

    for claim in claims:
        if claim.node not in blocks:
            continue
        for raw in _as_list(claim.value):
            soft = claim.kind == "soft"
            try:
                net = parse_network(raw, f"pod_cidr of {claim.node} ({claim.source})")
            except PlanError:
                if soft:
                    continue
                raise
            fam = net.version
            if claim.kind == "pin":
                key = (claim.node, fam)
                if key in pinned_family:
                    raise PlanError(
                        f"pod_cidr of {claim.node} pins two {_FAMILY_NAME[fam]} blocks "
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
                        f"pod_cidr {net} of {claim.node} is {_FAMILY_NAME[fam]} but cluster_cidr has no "
                        f"{_FAMILY_NAME[fam]} range; add one to cluster_cidr or drop the pin"
                    )
                raise PlanError(
                    f"{claim.node} uses {net} ({claim.source}) but cluster_cidr no longer has an "
                    f"{_FAMILY_NAME[fam]} range; changing cluster_cidr needs a teardown of the node "
                    "first (playbooks/teardown.yml), or restore the old cluster_cidr"
                )
            if not (cluster.first <= net.first and net.last <= cluster.last):
                if soft:
                    continue
                if claim.kind == "pin":
                    raise PlanError(
                        f"pod_cidr {net} pinned for {claim.node} is outside cluster_cidr {cluster}; "
                        f"pin a /{prefixes[fam]} inside {cluster}"
                    )
                raise PlanError(
                    f"{claim.node} uses {net} ({claim.source}), which is outside cluster_cidr {cluster}; "
                    "changing cluster_cidr needs a teardown of the node first (playbooks/teardown.yml), "
                    "or restore the old cluster_cidr"
                )
            if net.prefixlen != prefixes[fam]:
                opt = "node_prefix" if fam == 4 else "node_prefix_v6"
                if soft:
                    continue
                if claim.kind == "pin":
                    raise PlanError(
                        f"pod_cidr {net} pinned for {claim.node} is a /{net.prefixlen} but {opt} is "
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
            opt = "node_prefix" if fam == 4 else "node_prefix_v6"
            raise PlanError(
                f"cluster_cidr {cluster} holds {total} /{prefix} node blocks but {len(nodes)} nodes need "
                f"one; set a longer {opt} (smaller blocks) or a larger cluster_cidr"
            )
        size = 1 << ((32 if fam == 4 else 128) - prefix)
        index = 0
        for node in missing:
            while cluster.first + index * size in taken[fam]:
                index += 1
            first = cluster.first + index * size
            net = IPNetwork(f"{IPAddress(first, fam)}/{prefix}")
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
    prefixes = {4: prefix, 6: prefix_v6}
    _check_prefixes(clusters, prefixes)
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


def _check_pod_names(node: str, names: list) -> None:
    seen = set()
    for name in names:
        if not isinstance(name, str) or not POD_NAME_RE.match(name):
            raise PlanError(
                f"pod name {name!r} on {node} is not allowed: it becomes a network namespace and a "
                "file name, so it must be a DNS label (lower-case letters, digits and '-', starting "
                "and ending with a letter or digit, at most 63 characters), e.g. web-1"
            )
        if name in seen:
            raise PlanError(f"pod {name} is listed twice on {node}; pod names must be unique per node")
        seen.add(name)


def _assign_pod_ips(
    node: str,
    blocks: list[IPNetwork],
    pods: list[str],
    pins: Mapping,
    claims: list[tuple[str, Mapping]],
) -> dict[str, list[str]]:
    """Give each pod one address per node block. ``claims``: [(source, {pod: ips})], soft."""
    by_family = {b.version: b for b in blocks}
    for block in blocks:
        usable = usable_pod_count(block)
        if len(pods) > usable:
            opt = "node_prefix" if block.version == 4 else "node_prefix_v6"
            raise PlanError(
                f"{node} has {len(pods)} pods but its block {block} holds only {usable} pod addresses; "
                f"run fewer pods on {node} or set {opt} to {_min_prefix_for(block.version, len(pods))} "
                "or shorter (needs a teardown when blocks already exist)"
            )
    taken: dict[int, dict[int, str]] = {f: {} for f in by_family}
    pinned: set[tuple[int, int]] = set()
    result: dict[str, dict[int, IPAddress]] = {p: {} for p in pods}

    for pod in sorted(pins):
        if pod not in result:
            continue
        seen_fam: set[int] = set()
        for raw in _as_list(pins[pod]):
            what = f"ip of pod {pod} on {node}"
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
                    "pin an address of the node's block or add that family to cluster_cidr"
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
            if int(ip) in taken[fam]:
                raise PlanError(
                    f"{what} {ip} is already pinned for pod {taken[fam][int(ip)]}; give each pod its own address"
                )
            taken[fam][int(ip)] = pod
            pinned.add((fam, int(ip)))
            result[pod][fam] = ip

    for source, mapping in claims:
        for pod in sorted(mapping or {}):
            if pod not in result:
                continue
            for raw in _as_list(mapping[pod]):
                try:
                    ip = IPNetwork(str(raw)).ip
                except (AddrFormatError, ValueError, TypeError):
                    continue
                fam = ip.version
                block = by_family.get(fam)
                if fam in result[pod] or block is None:
                    continue
                if not block.first <= int(ip) <= block.last or int(ip) in _reserved_offsets(block):
                    continue  # the node block changed (pin); the pod gets a fresh address
                holder = taken[fam].get(int(ip))
                if holder is not None:
                    if (fam, int(ip)) in pinned and source == "recorded":
                        raise PlanError(
                            f"ip {ip} pinned for pod {holder} on {node} is in use by pod {pod} "
                            f"({source}); pin another address, or remove pod {pod} first"
                        )
                    continue
                taken[fam][int(ip)] = pod
                result[pod][fam] = ip

    for fam, block in by_family.items():
        candidate = block.first + 2
        for pod in sorted(pods):
            if fam in result[pod]:
                continue
            while candidate in taken[fam]:
                candidate += 1
            taken[fam][candidate] = pod
            result[pod][fam] = IPAddress(candidate, fam)
            candidate += 1
    return {
        pod: [f"{result[pod][b.version]}/{b.prefixlen}" for b in blocks]
        for pod in sorted(pods)
    }


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


# --------------------------------------------------------------------------- the plan


def _check_backend(backend, vxlan) -> dict:
    if backend not in BACKENDS:
        raise PlanError(f"backend {backend!r} is not supported; use one of: {', '.join(BACKENDS)}")
    out = dict(DEFAULT_VXLAN)
    out.update({k: v for k, v in (vxlan or {}).items() if v is not None})
    for key, low, high in (("vni", 1, 16777215), ("port", 1, 65535)):
        val = out[key]
        if isinstance(val, bool) or not isinstance(val, int) or not low <= val <= high:
            raise PlanError(f"vxlan {key} {val!r} is out of range; use an integer from {low} to {high}")
    if not isinstance(out["device"], str) or not LINK_NAME_RE.match(out["device"]):
        raise PlanError(
            f"vxlan device {out['device']!r} is not a valid link name; use 1-15 characters "
            "without spaces, '/' or ':', e.g. flatnet.1"
        )
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
    mtu = data.get("mtu") or 1500
    return {
        "interface": data.get("interface"),
        "ip": str(ip),
        "prefix": network.prefixlen,
        "network": str(network),
        "mtu": int(mtu),
        "_ip": ip,
        "_net": network,
    }


def _adjacent(a: dict, b: dict) -> bool:
    return a["_ip"].version == b["_ip"].version and a["_ip"] in b["_net"] and b["_ip"] in a["_net"]


def _normalize_request(request):
    """A bare pod name is short for ``{name: NAME}`` (what ``flatnet_pods_per_node`` generates)."""
    if not isinstance(request, Mapping):
        return request
    pods = request.get("pods")
    if not pods:
        return request
    return dict(request, pods=[{"name": p} if isinstance(p, str) else p for p in _as_list(pods)])


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
) -> dict:
    """Build ``flatnet_plan`` (see docs/design.md) for the nodes of this play.

    ``nodes``: {name: {underlay, recorded, pod_cidr, pods}}; ``cached``: an earlier plan
    (or None); ``inventory_nodes``: every node of the cluster, in or out of this play.
    """
    require_netaddr()
    vxlan_out = _check_backend(backend, vxlan)
    clusters = parse_cluster_cidrs(cluster_cidr)
    prefixes = {4: node_prefix, 6: node_prefix_v6}
    _check_prefixes(clusters, prefixes)
    services = _by_family(
        [parse_network(s, "service_cidr") for s in _as_list(service_cidr)], "service_cidr"
    )
    reserved = [parse_network(r, "reserved_cidrs entry") for r in _as_list(reserved_cidrs)]

    nodes = {name: _normalize_request(req) for name, req in dict(nodes or {}).items()}
    in_play = _node_names(nodes)
    inventory = set(str(n) for n in _as_list(inventory_nodes)) | set(in_play)
    cached_nodes = {}
    if isinstance(cached, Mapping) and isinstance(cached.get("nodes"), Mapping):
        cached_nodes = {str(k): v for k, v in cached["nodes"].items() if isinstance(v, Mapping)}
    kept = sorted(n for n in cached_nodes if n in inventory and n not in nodes)
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

    disjoint = [("service_cidr", s) for s in services]
    disjoint += [(f"the underlay network of {n}", underlays[n]["_net"]) for n in all_nodes]
    disjoint += [("reserved range", r) for r in reserved]
    _check_disjoint(clusters, disjoint)

    for name in in_play:
        pods = (nodes[name] or {}).get("pods") or []
        for pod in pods:
            if not isinstance(pod, Mapping) or "name" not in pod:
                raise PlanError(f"pods of {name} must be a list of {{name, ip, command}} mappings; got {pod!r}")
        _check_pod_names(name, [p["name"] for p in pods])

    # Node blocks: pins, then recorded on the node, then the cached plan.
    claims = []
    for name in in_play:
        pin = (nodes[name] or {}).get("pod_cidr")
        if pin:
            claims.append(_Claim(name, pin, "pinned with flatnet_pod_cidr", "pin"))
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
    blocks = _assign_blocks(clusters, prefixes, all_nodes, claims)

    out_nodes = {}
    for name in all_nodes:
        node_blocks = [blocks[name][c.version] for c in clusters]
        if name in nodes:
            request = nodes[name] or {}
            pod_reqs = request.get("pods") or []
            recorded_pods = (request.get("recorded") or {}).get("pods") or {}
            cached_pods = {
                p["name"]: p.get("ips")
                for p in (cached_nodes.get(name, {}).get("pods") or [])
                if isinstance(p, Mapping) and "name" in p
            }
            ips = _assign_pod_ips(
                name,
                node_blocks,
                [p["name"] for p in pod_reqs],
                {p["name"]: p.get("ip") for p in pod_reqs if p.get("ip")},
                [("recorded", recorded_pods), ("cached", cached_pods)],
            )
            commands = {p["name"]: p.get("command") for p in pod_reqs}
            pods_out = [{"name": p, "ips": ips[p], "command": commands[p]} for p in sorted(ips)]
        else:
            pods_out = [dict(p) for p in (cached_nodes[name].get("pods") or []) if isinstance(p, Mapping)]
        underlay = {k: v for k, v in underlays[name].items() if not k.startswith("_")}
        out_nodes[name] = {
            "pod_cidrs": [str(b) for b in node_blocks],
            "gateways": [gateway(b) for b in node_blocks],
            "vtep_ips": [vtep_ip(b) for b in node_blocks],
            "vtep_mac": vtep_mac(underlays[name]["ip"]),
            "underlay": underlay,
            "pods": pods_out,
        }

    any_vxlan = False
    for name in all_nodes:
        peers = []
        for other in all_nodes:
            if other == name:
                continue
            adjacent = _adjacent(underlays[name], underlays[other])
            if backend == "host-gw" and not adjacent:
                a, b = sorted((name, other))
                raise PlanError(
                    f"backend host-gw needs nodes on one underlay network, but {a} "
                    f"({underlays[a]['network']}) and {b} ({underlays[b]['network']}) are not; "
                    "use backend vxlan or auto"
                )
            # The kernel has no IPv6 route via an IPv4 gateway: over an IPv4 underlay, IPv6 pods
            # can only cross the VXLAN tunnel, so auto picks it and host-gw cannot work.
            v6_over_v4 = underlays[name]["_net"].version == 4 and any(c.version == 6 for c in clusters)
            if backend == "host-gw" and v6_over_v4:
                raise PlanError(
                    "backend host-gw cannot carry IPv6 pod traffic over the IPv4 underlay "
                    f"({name} {underlays[name]['ip']}): use backend vxlan or auto for a dual-stack cluster"
                )
            direct = backend == "host-gw" or (backend == "auto" and adjacent and not v6_over_v4)
            mode = "direct" if direct else "vxlan"
            any_vxlan = any_vxlan or mode == "vxlan"
            peers.append({
                "name": other,
                "mode": mode,
                "underlay_ip": underlays[other]["ip"],
                "pod_cidrs": list(out_nodes[other]["pod_cidrs"]),
                "vtep_ips": list(out_nodes[other]["vtep_ips"]),
                "vtep_mac": out_nodes[other]["vtep_mac"],
            })
        out_nodes[name]["peers"] = peers

    if mtu is None:
        lowest = min(underlays[n]["mtu"] for n in all_nodes) if all_nodes else 1500
        family = next(iter(families)) if families else 4
        pod_mtu = lowest - VXLAN_OVERHEAD[family] if any_vxlan else lowest
        origin = f"computed from the underlay MTU {lowest}" + (" minus VXLAN overhead" if any_vxlan else "")
    else:
        if isinstance(mtu, bool) or not isinstance(mtu, int):
            raise PlanError(f"mtu {mtu!r} is not an integer; give a number such as 1450, or null for automatic")
        pod_mtu = mtu
        origin = "given"
    dual_or_v6 = any(c.version == 6 for c in clusters)
    floor = MIN_MTU_V6 if dual_or_v6 else MIN_MTU
    if pod_mtu < floor:
        why = "IPv6 needs at least 1280" if dual_or_v6 else "IPv4 needs at least 576"
        raise PlanError(
            f"pod MTU {pod_mtu} ({origin}) is too small: {why}; raise the underlay MTU or set mtu to {floor} or more"
        )
    if pod_mtu > 65535:
        raise PlanError(f"mtu {pod_mtu} is larger than 65535; give a real link MTU such as 1500 or 9000")

    service_out = [str(s) for s in services]
    return {
        "cluster_cidrs": [str(c) for c in clusters],
        "service_cidr": service_out[0] if len(service_out) == 1 else service_out,
        "backend": backend,
        "mtu": pod_mtu,
        "masquerade": bool(masquerade),
        "vxlan": vxlan_out,
        "nodes": out_nodes,
    }
