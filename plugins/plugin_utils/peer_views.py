# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Peers (controller side, pure functions): which nodes reach each other on-link, and each
node's view of its peers (``peers_of``).

Peers are not stored per node in the plan (that is nodes² entries): each node's view is
derived where it is used, in O(nodes).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


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
        # the others are tunnelled as with auto (plugin_utils/bgp_plan.py, docs/backends.md).
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
