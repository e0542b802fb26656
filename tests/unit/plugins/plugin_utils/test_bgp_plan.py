# SPDX-License-Identifier: GPL-3.0-or-later
"""The bgp backend's plan: bad flatnet_bgp_* inputs are refused with the variable and the value
named; peers_of gives mode bgp on one subnet and vxlan across; bgp_of derives the sessions
(mesh, reflectors, a subnet without a reflector) and the accepted prefixes."""

from __future__ import annotations

import pytest

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan, peer_views, plan_inputs
from ansible_collections.flatnet.cluster.plugins.plugin_utils.bgp_plan import bgp_of, check_bgp
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def _node(ip, network="192.168.50.0/24"):
    return {"underlay": {"interface": "eth0", "ip": ip, "prefix": int(network.split("/")[1]), "network": network,
                         "mtu": 1500}, "recorded": {}, "pod_cidr": None, "pods": []}


def _plan(n=3, other_subnet=(), bgp=None, cluster_cidr=plan_inputs.DEFAULT_CLUSTER_CIDR):
    nodes = {}
    for i in range(1, n + 1):
        name = f"node{i}"
        nodes[name] = (_node(f"192.168.60.{10 + i}", "192.168.60.0/24") if name in other_subnet
                       else _node(f"192.168.50.{10 + i}"))
    plan = cluster_plan.build_plan(nodes, backend="bgp", cluster_cidr=cluster_cidr)
    plan["bgp"] = check_bgp(bgp or {}, plan)
    return plan


BAD = [
    ("asn-public", {"asn": 3320}, ["flatnet_bgp_asn", "3320", "private"]),
    ("asn-text", {"asn": "sixty"}, ["flatnet_bgp_asn", "'sixty'", "integer"]),
    ("asn-bool", {"asn": True}, ["flatnet_bgp_asn", "True"]),
    ("asn-too-big", {"asn": 4294967295}, ["flatnet_bgp_asn", "4294967295", "range"]),
    ("asn-65535", {"asn": 65535}, ["flatnet_bgp_asn", "65535", "private"]),
    ("rr-string", {"route_reflectors": "node1"}, ["flatnet_bgp_route_reflectors", "'node1'", "list"]),
    ("rr-unknown", {"route_reflectors": ["node9"]}, ["flatnet_bgp_route_reflectors", "'node9'", "not a node"]),
    ("rr-twice", {"route_reflectors": ["node1", "node1"]}, ["flatnet_bgp_route_reflectors", "node1", "twice"]),
    ("rr-not-name", {"route_reflectors": [3]}, ["flatnet_bgp_route_reflectors", "3"]),
    ("hold-small", {"hold_time": 2}, ["flatnet_bgp_hold_time", "2", "range"]),
    ("hold-text", {"hold_time": "9s"}, ["flatnet_bgp_hold_time", "'9s'"]),
    ("keepalive-zero", {"keepalive_time": 0}, ["flatnet_bgp_keepalive_time", "0", "range"]),
    ("keepalive-vs-hold", {"keepalive_time": 4, "hold_time": 9}, ["flatnet_bgp_keepalive_time", "4", "third", "3"]),
    ("unknown-key", {"asm": 64512}, ["'asm'", "asn"]),
]


@pytest.mark.parametrize("bgp,fragments", [(case[1], case[2]) for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_refused_naming_variable_and_value(bgp, fragments):
    with pytest.raises(PlanError) as err:
        _plan(bgp=bgp)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_edges_pass():
    for asn in (64512, 65534, 4200000000, 4294967294, "64513"):
        assert _plan(bgp={"asn": asn})["bgp"]["asn"] == int(asn)
    assert _plan(bgp={"hold_time": 3, "keepalive_time": 1})["bgp"]["hold_time"] == 3


def test_defaults():
    assert _plan()["bgp"] == {"asn": 64512, "route_reflectors": [], "hold_time": 9, "keepalive_time": 3}


def test_ipv6_cluster_is_refused():
    nodes = {"node1": _node("192.168.50.11"), "node2": _node("192.168.50.12")}
    plan = cluster_plan.build_plan(nodes, backend="bgp", cluster_cidr=["10.244.0.0/16", "fd00:10::/56"])
    with pytest.raises(PlanError, match="IPv4 pod CIDRs only.*fd00:10::/56"):
        check_bgp({}, plan)


def test_peers_of_mode_bgp_on_one_subnet_vxlan_across():
    plan = _plan(4, other_subnet=("node4",))
    modes = {p["name"]: p["mode"] for p in peer_views.peers_of(plan, "node1")}
    assert modes == {"node2": "bgp", "node3": "bgp", "node4": "vxlan"}
    assert {p["mode"] for p in peer_views.peers_of(plan, "node4")} == {"vxlan"}
    assert plan["mtu"] == 1450  # a VXLAN peer exists: the pod MTU leaves room for it


def test_full_mesh():
    plan = _plan(3)
    view = bgp_of(plan, "node1")
    assert view["role"] == "mesh" and view["router_id"] == "192.168.50.11"
    assert [(s["name"], s["address"], s["rr_client"]) for s in view["sessions"]] == [
        ("node2", "192.168.50.12", False), ("node3", "192.168.50.13", False)]
    assert view["pod_cidrs"] == plan["nodes"]["node1"]["pod_cidrs"]
    assert {(a["prefix"], a["next_hop"]) for a in view["accept"]} == {
        (plan["nodes"][n]["pod_cidrs"][0], plan["nodes"][n]["underlay"]["ip"]) for n in ("node2", "node3")}


def test_route_reflectors():
    plan = _plan(5, bgp={"route_reflectors": ["node2", "node1"]})
    assert plan["bgp"]["route_reflectors"] == ["node1", "node2"]
    rr = bgp_of(plan, "node1")
    assert rr["role"] == "reflector" and rr["rr_cluster_id"] == "192.168.50.11"
    assert {s["name"]: s["rr_client"] for s in rr["sessions"]} == {
        "node2": False, "node3": True, "node4": True, "node5": True}
    assert bgp_of(plan, "node2")["rr_cluster_id"] == "192.168.50.11"
    client = bgp_of(plan, "node4")
    assert client["role"] == "client" and [s["name"] for s in client["sessions"]] == ["node1", "node2"]
    # A client learns every served node's prefixes (reflected), each only from its owner's next hop.
    assert {a["node"] for a in client["accept"]} == {"node1", "node2", "node3", "node5"}


def test_subnet_without_reflector_falls_back_to_mesh():
    plan = _plan(5, other_subnet=("node4", "node5"), bgp={"route_reflectors": ["node1"]})
    four = bgp_of(plan, "node4")
    assert four["role"] == "mesh" and [s["name"] for s in four["sessions"]] == ["node5"]
    assert [s["name"] for s in bgp_of(plan, "node3")["sessions"]] == ["node1"]
    assert {a["node"] for a in bgp_of(plan, "node1")["accept"]} == {"node2", "node3"}


def test_bgp_of_refuses_other_backends():
    nodes = {"node1": _node("192.168.50.11"), "node2": _node("192.168.50.12")}
    with pytest.raises(PlanError, match="not bgp"):
        bgp_of(cluster_plan.build_plan(nodes, backend="auto"), "node1")


def _query(plan, node, sessions_info="Established", drop=(), extra=()):
    view = bgp_of(plan, node)
    return {"running": True,
            "sessions": {s["name"]: {"info": sessions_info, "state": "up"} for s in view["sessions"]},
            "kernel_routes": [{"prefix": a["prefix"], "via": a["next_hop"]} for a in view["accept"]
                              if a["node"] not in drop] + list(extra)}


def test_check_results_pass_and_fail():
    from ansible_collections.flatnet.cluster.plugins.plugin_utils.bgp_plan import check_results
    plan = _plan(3)
    good = check_results(_query(plan, "node1"), plan, "node1")
    assert [r["check"] for r in good].count("bgp-session") == 2 and all(r["ok"] for r in good)
    n2 = plan["nodes"]["node2"]["pod_cidrs"][0]
    bad = check_results(_query(plan, "node1", "Active", drop=("node3",),
                               extra=[{"prefix": "0.0.0.0/0", "via": "192.168.50.12"},
                                      {"prefix": n2, "via": "192.168.50.13"}]), plan, "node1")
    reasons = sorted(r["reason"] for r in bad if not r["ok"])
    assert reasons == ["foreign-prefix", "missing-prefix", "session-down", "session-down", "wrong-next-hop"]
    down = check_results({"running": False}, plan, "node1")
    assert {r["reason"] for r in down} == {"bird-down", "missing-prefix"}


def test_report_knows_the_bgp_checks():
    from ansible_collections.flatnet.cluster.plugins.plugin_utils import report
    from ansible_collections.flatnet.cluster.plugins.plugin_utils.bgp_plan import check_results
    plan = _plan(3)
    results = check_results({"running": False}, plan, "node1")
    built = report.build(results, plan=plan)
    assert not built["ok"] and built["summary"]["failed_required"] == len(results)
    assert any("BIRD does not run" in f["cause"] for f in built["failures"])
