# SPDX-License-Identifier: GPL-3.0-or-later
"""The CNI split of node blocks (plan) and the conflist / subnet.env renderers."""
from __future__ import annotations

import json

import pytest
from netaddr import IPAddress, IPNetwork

from ansible_collections.flatnet.cluster.plugins.module_utils import cni_config as C
from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan, cni_plan as cni
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def node(ip, pods=None, recorded=None, pin=None, containers=None):
    return {
        "underlay": {"interface": "eth0", "ip": ip, "prefix": 24, "network": "192.168.50.0/24",
                     "mtu": 1500, "family": 4},
        "recorded": recorded or {},
        "pod_cidr": pin,
        "pods": pods or [],
        "cni_containers": containers or {},
    }


def two(**kw):
    return {"node1": node("192.168.50.11", **kw), "node2": node("192.168.50.12")}


# --------------------------------------------------------------------------- the split


@pytest.mark.parametrize("share, pod_last, cni_cidr, cni_last", [
    ("1/2", "10.244.0.127", "10.244.0.128/25", "10.244.0.254"),
    ("1/4", "10.244.0.191", "10.244.0.192/26", "10.244.0.254"),
    (" 1 / 64 ", "10.244.0.251", "10.244.0.252/30", "10.244.0.254"),
])
def test_split_v4(share, pod_last, cni_cidr, cni_last):
    s = cni.split_block(IPNetwork("10.244.0.0/24"), cni.parse_share(share))
    assert str(IPAddress(s["pod_first"])) == "10.244.0.2"
    assert str(IPAddress(s["pod_last"])) == pod_last
    assert s["cni_cidr"] == cni_cidr
    assert str(IPAddress(s["cni_last"])) == cni_last  # the broadcast address stays out


def test_split_v6_keeps_last_address():
    s = cni.split_block(IPNetwork("fd00:10:244::/64"), 2)
    assert s["cni_cidr"] == "fd00:10:244:0:8000::/65"
    assert IPAddress(s["cni_last"], 6) == IPAddress("fd00:10:244::ffff:ffff:ffff:ffff")


@pytest.mark.parametrize("bad", ["1/3", "1/1", "2/4", "1/0", "half", 2, None, True, "1/2048", ["1/2"], "1/2\n5"])
def test_share_refused_naming_the_variable(bad):
    with pytest.raises(cni.CNIPlanError, match=r"^flatnet_cni_range .* is not a share"):
        cni.parse_share(bad)


def test_share_too_small_for_the_block():
    with pytest.raises(cni.CNIPlanError, match="leaves no room"):
        cni.split_block(IPNetwork("10.244.0.0/28"), 8)
    with pytest.raises(cni.CNIPlanError, match="cannot split"):
        cni.split_block(IPNetwork("10.244.0.0/30"), 8)


def test_segments_cut_holes():
    assert cni.segments(10, 20, [12, 13, 20, 99]) == [(10, 11), (14, 19)]
    assert cni.segments(10, 12, [10, 11, 12]) == []
    assert cni.segments(10, 12, []) == [(10, 12)]


# --------------------------------------------------------------------------- in the plan


def test_plan_default_off_changes_nothing():
    plan = cluster_plan.build_plan(two())
    assert "cni" not in plan
    assert "cni" not in plan["nodes"]["node1"]


def test_plan_splits_and_keeps_pods_below():
    plan = cluster_plan.build_plan(two(pods=[{"name": "a", "ip": None, "command": None}]), cni=True)
    n1 = plan["nodes"]["node1"]
    assert plan["cni"] == {"enabled": True, "range": "1/2", "network": "flatnet"}
    assert n1["cni"]["range_cidrs"] == ["10.244.0.128/25"]
    assert n1["cni"]["ranges"] == [[{"subnet": "10.244.0.0/24", "rangeStart": "10.244.0.128",
                                     "rangeEnd": "10.244.0.254", "gateway": "10.244.0.1"}]]
    assert n1["pods"][0]["ips"] == ["10.244.0.2/24"]


def test_new_pods_never_enter_the_cni_range():
    pods = [{"name": f"p{i}", "ip": None, "command": None} for i in range(62)]
    plan = cluster_plan.build_plan(two(pods=pods), cni=True, cni_range="1/4")
    assert max(int(IPNetwork(p["ips"][0]).ip) for p in plan["nodes"]["node1"]["pods"]) == int(IPAddress("10.244.0.63"))
    too_many = pods + [{"name": f"q{i}", "ip": None, "command": None} for i in range(129)]
    with pytest.raises(PlanError, match=r"holds only 190 pod addresses below the CNI range 10\.244\.0\.192/26"):
        cluster_plan.build_plan(two(pods=too_many), cni=True, cni_range="1/4")


def test_pinned_pod_in_cni_range_refused():
    with pytest.raises(PlanError, match=r"flatnet_pods of node1: ip of pod a 10\.244\.0\.200 is in the CNI range "
                                        r"10\.244\.0\.128/25 \(flatnet_cni_range 1/2\); pin an address from "
                                        r"10\.244\.0\.2 to 10\.244\.0\.127"):
        cluster_plan.build_plan(two(pods=[{"name": "a", "ip": "10.244.0.200", "command": None}]), cni=True)


def test_existing_pods_in_the_upper_part_keep_their_addresses():
    # Pods made before the split (e.g. a pin from an older run) sit at .130 and .200: they keep them,
    # new pods go below, and host-local gets the share without those two addresses.
    recorded = {"pod_cidrs": ["10.244.0.0/24"], "pods": {"old1": ["10.244.0.130/24"], "old2": ["10.244.0.200/24"]}}
    pods = [{"name": n, "ip": None, "command": None} for n in ("old1", "old2", "new")]
    plan = cluster_plan.build_plan(two(pods=pods, recorded=recorded), cni=True)
    n1 = plan["nodes"]["node1"]
    assert {p["name"]: p["ips"] for p in n1["pods"]} == {
        "old1": ["10.244.0.130/24"], "old2": ["10.244.0.200/24"], "new": ["10.244.0.2/24"]}
    assert [(r["rangeStart"], r["rangeEnd"]) for r in n1["cni"]["ranges"][0]] == [
        ("10.244.0.128", "10.244.0.129"), ("10.244.0.131", "10.244.0.199"), ("10.244.0.201", "10.244.0.254")]
    assert n1["cni"]["pod_addresses_in_range"] == ["10.244.0.130", "10.244.0.200"]


def test_cidr_change_refused_while_containers_hold_addresses():
    req = two(recorded={"pod_cidrs": ["10.244.0.0/24"], "pods": {}}, pin="10.244.7.0/24",
              containers={"10.244.0.130": "0123456789abcdef"})
    with pytest.raises(PlanError, match=r"node1: container 0123456789ab holds 10\.244\.0\.130 .*outside node1's planned "
                                        r"block 10\.244\.7\.0/24; moving node1 from 10\.244\.0\.0/24 to 10\.244\.7\.0/24 "
                                        r"is refused while containers hold addresses"):
        cluster_plan.build_plan(req, cni=True)
    # without containers the same change plans
    req["node1"]["cni_containers"] = {}
    assert cluster_plan.build_plan(req, cni=True)["nodes"]["node1"]["pod_cidrs"] == ["10.244.7.0/24"]


def test_share_change_and_cni_off_refused_while_containers_hold_addresses():
    req = two(recorded={"pod_cidrs": ["10.244.0.0/24"], "pods": {}}, containers={"10.244.0.130": "abc"})
    assert cluster_plan.build_plan(req, cni=True)["nodes"]["node1"]["cni"]
    with pytest.raises(PlanError, match=r"outside the new CNI range 10\.244\.0\.192/26; this flatnet_cni_range"):
        cluster_plan.build_plan(req, cni=True, cni_range="1/4")
    with pytest.raises(PlanError, match=r"flatnet_cni: false is refused while containers hold addresses"):
        cluster_plan.build_plan(req, cni=False)


@pytest.mark.parametrize("bad", ["maybe", 2, [True]])
def test_cni_flag_refused(bad):
    with pytest.raises(PlanError, match=r"^flatnet_cni .* is not a boolean"):
        cluster_plan.build_plan(two(), cni=bad)


def test_share_refused_in_plan():
    with pytest.raises(PlanError, match=r"^flatnet_cni_range '1/3' is not a share"):
        cluster_plan.build_plan(two(), cni=True, cni_range="1/3")


def test_dual_stack_ranges_per_family():
    nodes = {"node1": node("192.168.50.11")}
    plan = cluster_plan.build_plan(nodes, cluster_cidr=["10.244.0.0/16", "fd00:10:244::/56"], backend="vxlan", cni=True)
    ranges = plan["nodes"]["node1"]["cni"]["ranges"]
    assert [r[0]["subnet"] for r in ranges] == ["10.244.0.0/24", "fd00:10:244::/64"]
    assert ranges[1][0]["gateway"] == "fd00:10:244::1"


# --------------------------------------------------------------------------- renderers


def test_conflist_render():
    ranges = [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.128", "rangeEnd": "10.244.1.254",
                "gateway": "10.244.1.1"}]]
    doc = C.render_conflist("flatnet", "cni0", 1450, ranges)
    assert doc["cniVersion"] == "1.0.0" and doc["name"] == "flatnet"
    assert [p["type"] for p in doc["plugins"]] == ["bridge", "portmap", "loopback"]
    br = doc["plugins"][0]
    assert (br["bridge"], br["isGateway"], br["ipMasq"], br["mtu"]) == ("cni0", True, False, 1450)
    assert br["ipam"] == {"type": "host-local", "ranges": ranges, "routes": [{"dst": "0.0.0.0/0"}]}
    assert doc["plugins"][1]["capabilities"] == {"portMappings": True}
    text = C.conflist_text(doc)
    assert C.is_ours(text) and json.loads(text) == doc
    assert not C.is_ours(json.dumps(dict(doc, **{C.MARKER_KEY: "someone else"})))
    assert not C.is_ours("{not json")


def test_subnet_env():
    assert C.render_subnet_env(["10.244.0.0/16"], ["10.244.1.0/24"], 1450, True) == (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    env = C.render_subnet_env(["10.244.0.0/16", "fd00::/56"], ["10.244.1.0/24", "fd00:0:0:1::/64"], 1400, False)
    assert "FLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\n" in env and env.endswith("FLANNEL_IPMASQ=false\n")


def test_reservations_read(tmp_path):
    d = tmp_path / "flatnet"
    d.mkdir()
    (d / "10.244.0.130").write_text("abc123\r\neth0")
    (d / "lock").write_text("")
    (d / "last_reserved_ip.0").write_text("10.244.0.130")
    assert C.reservations(str(tmp_path), "flatnet") == [
        {"ip": "10.244.0.130", "container_id": "abc123", "ifname": "eth0", "file": str(d / "10.244.0.130")}]
    assert C.reservations(str(tmp_path), "absent") == []
