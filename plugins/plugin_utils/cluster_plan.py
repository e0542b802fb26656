# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster plan, ``flatnet_plan`` (controller side, pure functions): its assembly from
the checked inputs (plan_inputs), node blocks (node_blocks), pod addresses (pod_addresses)
and the peer relations (peer_views), and its file (``plan_json``).

Everything here is deterministic: the same input always gives the same plan.
Stability sources, highest first: pins, assignments recorded on the node,
the cached plan, then fresh allocation (lowest free block / address first,
nodes and pods in sorted name order). Every problem raises ``PlanError``
with one message that names the bad value and the fix.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from typing import NamedTuple

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cni_plan as _cni
from ansible_collections.flatnet.cluster.plugins.plugin_utils.node_blocks import (
    _address,
    _assign_blocks,
    _check_disjoint,
    _check_prefixes,
    _Claim,
    _node_names,
    gateway,
    vtep_mac,
)
from ansible_collections.flatnet.cluster.plugins.plugin_utils.peer_views import (
    _adjacent,
    _nodes_with_a_remote_peer,
)
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import (
    DEFAULT_BRIDGE,
    DEFAULT_CLUSTER_CIDR,
    DEFAULT_NODE_PREFIX,
    DEFAULT_NODE_PREFIX_V6,
    DEFAULT_SERVICE_CIDR,
    ROLE_VARS,
    PlanError,
    _as_list,
    _by_family,
    _check_backend,
    _check_link_names,
    _check_unique_pods,
    _integer,
    _pod_entries,
    _underlay,
    check_bool,
    parse_cluster_cidrs,
    parse_network,
    require_netaddr,
)
from ansible_collections.flatnet.cluster.plugins.plugin_utils.pod_addresses import _assign_pod_ips

# VXLAN encapsulation cost: outer IP + UDP + VXLAN + inner Ethernet.
VXLAN_OVERHEAD = {4: 50, 6: 70}
MIN_MTU = 576
MIN_MTU_V6 = 1280
MAX_MTU = 65535
# The prefix of one address: the VXLAN device carries its VTEP address as a host route.
HOST_PREFIX = {4: 32, 6: 128}


class _Settings(NamedTuple):
    """The cluster-wide inputs, checked."""

    cni: bool
    cni_denom: int
    vxlan: dict
    masquerade: bool
    given_mtu: int | None
    clusters: list
    prefixes: dict
    services: list
    reserved: list


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
    collection's pods and CNI containers (``cni_range``: the share, "1/N"; plugin_utils/cni_plan.py).
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
    """The plan's phases, in the order their checks run: settings, node requests, the cached
    plan, underlays, links and ranges, node blocks, node entries, tunnels, MTU."""
    v = ROLE_VARS
    settings = _check_settings(cluster_cidr, node_prefix, node_prefix_v6, service_cidr, reserved_cidrs,
                               backend, mtu, vxlan, masquerade, cni, cni_range, v)
    nodes, in_play = _node_requests(nodes, pods_per_node, v)
    cached_nodes = _cached_nodes(cached)
    inventory = set(str(n) for n in _as_list(inventory_nodes)) | set(in_play)
    kept = sorted(n for n in cached_nodes if n not in nodes and n in inventory)
    all_nodes = sorted(in_play + kept)
    underlays = _check_underlays(nodes, in_play, kept, cached_nodes, all_nodes)
    families = {underlays[n]["_ip"].version for n in all_nodes}
    bridges = _check_links_and_ranges(nodes, in_play, kept, cached_nodes, all_nodes, underlays, bridge,
                                      settings, v)
    claims = _block_claims(nodes, in_play, kept, cached_nodes, v)
    blocks = _assign_blocks(settings.clusters, settings.prefixes, all_nodes, claims, v)
    out_nodes = {}
    for name in all_nodes:
        node_blocks = [blocks[name][c.version] for c in settings.clusters]
        out_nodes[name] = _node_entry(name, node_blocks, nodes, cached_nodes, underlays, bridges, settings, v)
    tunnelling = _tunnelling(backend, settings.clusters, families, all_nodes, underlays)
    pod_mtu = _pod_mtu(mtu, settings, families, all_nodes, underlays, tunnelling, v)
    service_out = [str(s) for s in settings.services]
    plan = {
        "cluster_cidrs": [str(c) for c in settings.clusters],
        "service_cidr": service_out[0] if len(service_out) == 1 else service_out,
        "backend": backend,
        "mtu": pod_mtu,
        "masquerade": settings.masquerade,
        "vxlan": settings.vxlan,
        "nodes": out_nodes,
    }
    if settings.cni:  # only then: plans without CNI keep their exact shape
        plan["cni"] = {"enabled": True, "range": f"1/{settings.cni_denom}", "network": _cni.NETWORK_NAME}
    return plan


def _check_settings(cluster_cidr, node_prefix, node_prefix_v6, service_cidr, reserved_cidrs, backend, mtu,
                    vxlan, masquerade, cni, cni_range, v: Mapping) -> _Settings:
    """The cluster-wide inputs, checked before any node's."""
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
    return _Settings(cni, cni_denom, vxlan_out, masquerade, given_mtu, clusters, prefixes, services, reserved)


def _node_requests(nodes, pods_per_node, v: Mapping) -> tuple[dict, list[str]]:
    """The requests of the nodes of this play, checked, with their pod entries; and their
    names, sorted."""
    if not isinstance(nodes or {}, Mapping):
        raise PlanError(f"nodes {nodes!r} is not a mapping of node name to its request")
    requests = {}
    for name, req in (nodes or {}).items():
        if req is not None and not isinstance(req, Mapping):
            raise PlanError(f"the request of node {name} {req!r} is not a mapping")
        requests[name] = dict(req or {})
    in_play = _node_names(requests)
    for name in in_play:
        for key in ("prune", "firewall", "vxlan_guard"):
            if requests[name].get(key) is not None:
                check_bool(requests[name][key], v[key], f" on {name}")
        requests[name]["pods"] = _pod_entries(name, requests[name], pods_per_node, v)
    return requests, in_play


def _cached_nodes(cached) -> dict:
    """The node entries of the cached plan (an earlier plan, or None)."""
    if isinstance(cached, Mapping) and isinstance(cached.get("nodes"), Mapping):
        # dict first: an isinstance() against an ABC alone costs a rerun a slow call per node.
        return {str(k): val for k, val in cached["nodes"].items() if isinstance(val, (dict, Mapping))}
    return {}


def _check_underlays(nodes, in_play, kept, cached_nodes, all_nodes) -> dict:
    """Every node's underlay: one address each, all of one family."""
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
    return underlays


def _check_links_and_ranges(nodes, in_play, kept, cached_nodes, all_nodes, underlays, bridge,
                            settings: _Settings, v: Mapping) -> dict:
    """Each node's links, the cluster CIDRs against the other ranges, and pod names across
    the cluster; returns the bridge of each node of the play."""
    # Before the CIDR checks: an underlay interface that is the bridge (a flatnet_underlay_interface
    # pointing at cni0) is best told as such, not as the bridge's network overlapping the cluster.
    bridges = {}
    for name in in_play:
        bridges[name] = nodes[name].get("bridge") or bridge
        _check_link_names(name, bridges[name], settings.vxlan["device"], underlays[name], v)

    disjoint = [(v["service_cidr"], s) for s in settings.services]
    disjoint += [(f"the underlay network of {n}", underlays[n]["_net"]) for n in all_nodes]
    disjoint += [(f"{v['reserved_cidrs']} entry", r) for r in settings.reserved]
    _check_disjoint(settings.clusters, disjoint, v)

    pods_of = {name: [(p["name"], p["_from"]) for p in nodes[name]["pods"]] for name in in_play}
    for name in kept:
        pods_of[name] = [(p["name"], "cached plan; node not in this play")
                         for p in (cached_nodes[name].get("pods") or [])
                         if isinstance(p, Mapping) and isinstance(p.get("name"), str)]
    _check_unique_pods(pods_of)
    return bridges


def _block_claims(nodes, in_play, kept, cached_nodes, v: Mapping) -> list[_Claim]:
    """The nodes' wishes for blocks, highest priority first: pins, then recorded on the node,
    then the cached plan."""
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
    return claims


def _node_entry(name, node_blocks, nodes, cached_nodes, underlays, bridges, settings: _Settings,
                v: Mapping) -> dict:
    """The plan entry of one node: planned anew when it is in the play, its pods (and CNI
    split) taken from the cached plan when it is not."""
    cni_out = None
    if name in nodes:
        pods_out, cni_out = _pods_in_play(name, nodes[name] or {}, node_blocks, cached_nodes, settings, v)
    else:
        pods_out = [dict(p) for p in (cached_nodes[name].get("pods") or []) if isinstance(p, Mapping)]
    underlay = {k: val for k, val in underlays[name].items() if not k.startswith("_")}
    # The blocks are canonical here: no re-normalising (gateway() and vtep_ip() take any CIDR).
    firsts = [(b.first, b.version, b.prefixlen) for b in node_blocks]
    entry = {
        "pod_cidrs": [str(b) for b in node_blocks],
        "gateways": [f"{_address(first + 1, fam)}/{plen}" for first, fam, plen in firsts],
        "vtep_ips": [_address(first, fam) for first, fam, _plen in firsts],
        # Ready for the roles, derived here for every node (a cached plan written before these
        # keys existed gets them too): no prefix arithmetic in Jinja.
        "gateway_ips": [_address(first + 1, fam) for first, fam, _plen in firsts],
        # The node's own source for what it sends from its host network (services, verify).
        "gateway_ipv4": next((_address(first + 1, fam) for first, fam, _plen in firsts if fam == 4), None),
        "vtep_cidrs": [f"{_address(first, fam)}/{HOST_PREFIX[fam]}" for first, fam, _plen in firsts],
        "vtep_mac": vtep_mac(underlays[name]["ip"]),
        "underlay": underlay,
        "pods": pods_out,
    }
    if name in nodes and cni_out is not None:
        entry["cni"] = cni_out
    elif name not in nodes and isinstance(cached_nodes[name].get("cni"), Mapping):
        entry["cni"] = dict(cached_nodes[name]["cni"])
    if name in bridges:
        entry["bridge"] = bridges[name]
    elif isinstance(cached_nodes.get(name, {}).get("bridge"), str):
        entry["bridge"] = cached_nodes[name]["bridge"]
    return entry


def _pods_in_play(name, request, node_blocks, cached_nodes, settings: _Settings, v: Mapping):
    """The pod entries and the CNI entry (or None) of a node of this play."""
    cni_denom = settings.cni_denom
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
        if settings.cni:
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
    for pod in pods_out:  # services select pods by label (plugin_utils/services_plan.py)
        if isinstance(labels.get(pod["name"]), Mapping) and labels[pod["name"]]:
            pod["labels"] = {str(k): str(val) for k, val in labels[pod["name"]].items()}
    cni_out = _node_cni(name, node_blocks, splits, ips, containers,
                        recorded_blocks=(request.get("recorded") or {}).get("pod_cidrs"))
    return pods_out, cni_out


def _tunnelling(backend, clusters, families, all_nodes, underlays) -> set:
    """The nodes that tunnel (VXLAN) to at least one peer, refusing host-gw where it cannot work."""
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
        return set()
    if backend == "vxlan" or v6_over_v4:
        return set(all_nodes)
    return set(apart)


def _pod_mtu(mtu, settings: _Settings, families, all_nodes, underlays, tunnelling, v: Mapping) -> int:
    """The pods' MTU: given, or the lowest underlay MTU less the VXLAN overhead when a node tunnels."""
    any_vxlan = bool(tunnelling)
    if mtu is None:
        lowest = min(underlays[n]["mtu"] for n in all_nodes) if all_nodes else 1500
        family = next(iter(families)) if families else 4
        pod_mtu = lowest - VXLAN_OVERHEAD[family] if any_vxlan else lowest
        origin = f"computed from the underlay MTU {lowest}" + (" minus VXLAN overhead" if any_vxlan else "")
    else:
        pod_mtu = settings.given_mtu
        origin = "given"
    dual_or_v6 = any(c.version == 6 for c in settings.clusters)
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
    return pod_mtu


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
