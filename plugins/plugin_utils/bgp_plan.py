# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The BGP backend's plan (controller side, pure functions).

``check_bgp`` validates the ``flatnet_bgp_*`` variables against a built plan (before any
change; messages name the variable and the value) and returns the plan's ``bgp`` section.
``bgp_of`` derives one node's BIRD view from the plan: its sessions (full mesh, or route
reflector clients and reflectors), the prefixes it announces and, for every prefix it may
learn, the one next hop (the owner's underlay IP) it may learn it from.

BGP sessions only run between nodes on one underlay subnet (``peers_of`` mode ``bgp``), so
every BGP next hop is on-link; peers on other subnets are reached through VXLAN as with the
``auto`` backend. A subnet without a route reflector falls back to a full mesh inside it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ansible_collections.flatnet.cluster.plugins.plugin_utils.peer_views import peers_of
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError

DEFAULT_ASN = 64512
DEFAULT_HOLD_TIME = 9
DEFAULT_KEEPALIVE_TIME = 3
# RFC 6996 private-use ASNs (2-byte and 4-byte ranges).
PRIVATE_ASNS = ((64512, 65534), (4200000000, 4294967294))
BGP_VARS = {
    "asn": "flatnet_bgp_asn",
    "route_reflectors": "flatnet_bgp_route_reflectors",
    "hold_time": "flatnet_bgp_hold_time",
    "keepalive_time": "flatnet_bgp_keepalive_time",
}
KEYS = tuple(BGP_VARS)


def _int(value, var, low, high, example):
    if isinstance(value, bool) or value is None:
        raise PlanError(f"{var} {value!r} is not an integer; write e.g. {example}")
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise PlanError(f"{var} {value!r} is not an integer; write e.g. {example}")
        value = int(text)
    if not isinstance(value, int):
        raise PlanError(f"{var} {value!r} is not an integer; write e.g. {example}")
    if not low <= value <= high:
        raise PlanError(f"{var} {value} is out of range {low}..{high}; write e.g. {example}")
    return value


def check_bgp(bgp, plan: Mapping) -> dict:
    """The plan's ``bgp`` section from the ``bgp`` option (keys of ``KEYS``), or PlanError."""
    if bgp is None:
        bgp = {}
    if not isinstance(bgp, Mapping):
        raise PlanError(f"bgp {bgp!r} is not a mapping of {', '.join(KEYS)}")
    unknown = sorted(str(k) for k in bgp if k not in KEYS)
    if unknown:
        raise PlanError(f"bgp has unknown keys {', '.join(map(repr, unknown))}; it takes {', '.join(KEYS)}")
    asn = bgp.get("asn")
    asn = _int(DEFAULT_ASN if asn is None else asn, BGP_VARS["asn"], 1, 4294967294, DEFAULT_ASN)
    if not any(low <= asn <= high for low, high in PRIVATE_ASNS):
        raise PlanError(
            f"{BGP_VARS['asn']} {asn} is not a private AS number: use 64512..65534 or "
            "4200000000..4294967294 (RFC 6996), e.g. 64512"
        )
    hold = bgp.get("hold_time")
    hold = _int(DEFAULT_HOLD_TIME if hold is None else hold, BGP_VARS["hold_time"], 3, 65535, DEFAULT_HOLD_TIME)
    keep = bgp.get("keepalive_time")
    keep = _int(DEFAULT_KEEPALIVE_TIME if keep is None else keep, BGP_VARS["keepalive_time"], 1, 65535,
                DEFAULT_KEEPALIVE_TIME)
    if keep * 3 > hold:
        raise PlanError(
            f"{BGP_VARS['keepalive_time']} {keep} is more than a third of {BGP_VARS['hold_time']} {hold}: "
            f"a peer would drop the session after one lost keepalive; use at most {hold // 3}"
        )
    reflectors = bgp.get("route_reflectors")
    if reflectors is None:
        reflectors = []
    if isinstance(reflectors, (str, Mapping)) or not isinstance(reflectors, (list, tuple)):
        raise PlanError(
            f"{BGP_VARS['route_reflectors']} {reflectors!r} is not a list of inventory hosts; write e.g. [node1, node2]"
        )
    nodes = plan.get("nodes") or {}
    seen = set()
    for entry in reflectors:
        if not isinstance(entry, str) or not entry:
            raise PlanError(f"{BGP_VARS['route_reflectors']} entry {entry!r} is not a host name")
        if entry in seen:
            raise PlanError(f"{BGP_VARS['route_reflectors']} lists {entry} twice")
        if entry not in nodes:
            raise PlanError(
                f"{BGP_VARS['route_reflectors']} entry {entry!r} is not a node of the cluster (nodes: "
                f"{', '.join(sorted(nodes)[:10])}{', ...' if len(nodes) > 10 else ''}); name inventory hosts of the plan"
            )
        seen.add(entry)
    for cidr in plan.get("cluster_cidrs") or []:
        if ":" in str(cidr):
            raise PlanError(
                f"flatnet_backend bgp carries IPv4 pod CIDRs only, but flatnet_cluster_cidr has {cidr}; "
                "use backend vxlan or auto for IPv6 or dual-stack clusters"
            )
    for name, entry in nodes.items():
        ip = str((entry.get("underlay") or {}).get("ip"))
        if ":" in ip:
            raise PlanError(
                f"flatnet_backend bgp needs an IPv4 underlay (the BIRD router id), but {name} has {ip}; "
                "use backend vxlan or auto"
            )
    return {"asn": asn, "route_reflectors": sorted(seen), "hold_time": hold, "keepalive_time": keep}


def bgp_of(plan: Mapping, name: str) -> dict:
    """Node ``name``'s BIRD view: ``{router_id, underlay_network, asn, hold_time, keepalive_time, pod_cidrs,
    cluster_cidrs, role, rr_cluster_id, sessions: [{name, address, rr_client}],
    accept: [{node, prefix, next_hop}]}``. O(nodes)."""
    nodes = plan.get("nodes") or {}
    if name not in nodes:
        raise PlanError(f"node {name} is not in the plan; run the flatnet.cluster.plan role for it first")
    if plan.get("backend") != "bgp":
        raise PlanError(f"the plan's backend is {plan.get('backend')!r}, not bgp")
    bgp = plan.get("bgp") or {}
    me = nodes[name]
    served = [p for p in peers_of(plan, name) if p["mode"] == "bgp"]
    reflectors = set(bgp.get("route_reflectors") or [])
    local_rr = sorted(p["name"] for p in served if p["name"] in reflectors)
    i_reflect = name in reflectors
    sessions = []
    if i_reflect:
        role = "reflector"
        for p in served:
            sessions.append({"name": p["name"], "address": p["underlay_ip"], "rr_client": p["name"] not in reflectors})
    elif local_rr:
        role = "client"
        for p in served:
            if p["name"] in reflectors:
                sessions.append({"name": p["name"], "address": p["underlay_ip"], "rr_client": False})
    else:
        role = "mesh"
        for p in served:
            sessions.append({"name": p["name"], "address": p["underlay_ip"], "rr_client": False})
    # Redundant reflectors of one subnet share a cluster id (the lowest reflector address) so
    # that they do not reflect each other's copies of the same client routes back and forth.
    cluster_id = None
    if i_reflect:
        addresses = [me["underlay"]["ip"]] + [p["underlay_ip"] for p in served if p["name"] in reflectors]
        cluster_id = str(min(ipaddress.ip_address(a) for a in addresses))
    accept = [{"node": p["name"], "prefix": c, "next_hop": p["underlay_ip"]}
              for p in served for c in p["pod_cidrs"]]
    return {
        "router_id": me["underlay"]["ip"],
        "underlay_network": me["underlay"].get("network") or f"{me['underlay']['ip']}/32",
        "asn": int(bgp.get("asn") or DEFAULT_ASN),
        "hold_time": int(bgp.get("hold_time") or DEFAULT_HOLD_TIME),
        "keepalive_time": int(bgp.get("keepalive_time") or DEFAULT_KEEPALIVE_TIME),
        "pod_cidrs": list(me.get("pod_cidrs") or []),
        "cluster_cidrs": list(plan.get("cluster_cidrs") or []),
        "role": role,
        "rr_cluster_id": cluster_id,
        "sessions": sessions,
        "accept": accept,
    }


SESSION_CHECK = "bgp-session"
ROUTES_CHECK = "bgp-routes"


def check_results(query: Mapping, plan: Mapping, node: str) -> list[dict]:
    """Verify results (plugin_utils/report.py shape) of one node's BGP state.

    ``query``: what ``flatnet.cluster.bgp`` with ``state: query`` returned (``running``,
    ``sessions`` by peer name, ``kernel_routes`` [{prefix, via}] of proto bird). One
    ``bgp-session`` result per planned session (Established or not) and one ``bgp-routes``
    result per prefix the node must have learned (in the kernel, via its owner), plus a
    failed one per learned prefix that the plan did not give to that next hop.
    """
    view = bgp_of(plan, node)
    running = bool(query.get("running"))
    sessions = query.get("sessions") or {}
    out = []
    for s in view["sessions"]:
        got = sessions.get(s["name"]) or {}
        info = got.get("info") if running else None
        ok = info == "Established"
        out.append({"check": SESSION_CHECK, "proto": "bgp", "src_node": node, "src": "bird", "src_ip": view["router_id"],
                    "dst_node": s["name"], "dst": "bird", "dst_ip": s["address"], "ok": ok,
                    "reason": "ok" if ok else ("bird-down" if not running else "session-down"),
                    "seen": info or (got.get("state") if running else "BIRD not running"),
                    "expected": "Established"})
    learned = {}
    for r in query.get("kernel_routes") or []:
        learned.setdefault(str(r.get("prefix")), set()).add(str(r.get("via")))
    expected = {a["prefix"]: a for a in view["accept"]}
    for prefix, a in sorted(expected.items()):
        vias = learned.get(prefix, set())
        ok = vias == {a["next_hop"]}
        out.append({"check": ROUTES_CHECK, "proto": "bgp", "src_node": node, "src": "kernel", "src_ip": None,
                    "dst_node": a["node"], "dst": prefix, "dst_ip": a["next_hop"], "ok": ok,
                    "reason": "ok" if ok else ("missing-prefix" if not vias else "wrong-next-hop"),
                    "seen": ", ".join(sorted(vias)) or "no proto bird route",
                    "expected": f"{prefix} via {a['next_hop']}"})
    for prefix in sorted(set(learned) - set(expected)):
        out.append({"check": ROUTES_CHECK, "proto": "bgp", "src_node": node, "src": "kernel", "src_ip": None,
                    "dst_node": None, "dst": prefix, "dst_ip": ", ".join(sorted(learned[prefix])), "ok": False,
                    "reason": "foreign-prefix", "seen": f"{prefix} via {', '.join(sorted(learned[prefix]))}",
                    "expected": "only the plan's prefixes of the BGP peers"})
    return out
