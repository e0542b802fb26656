# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import copy
import hashlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan, node_blocks, peer_views, plan_inputs, pod_addresses
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def node(ip, network="192.168.50.0/24", mtu=1500, pods=None, recorded=None, pin=None):
    return {
        "underlay": {"interface": "eth0", "ip": ip, "prefix": int(network.split("/")[1]),
                     "network": network, "mtu": mtu, "family": 6 if ":" in ip else 4},
        "recorded": recorded or {},
        "pod_cidr": pin,
        "pods": pods or [],
    }


def pod(name, ip=None, command=None):
    return {"name": name, "ip": ip, "command": command}


def three_nodes(**kw):
    return {f"node{i}": node(f"192.168.50.1{i}", **kw) for i in (1, 2, 3)}


# --------------------------------------------------------------------------- parsing


class TestParse:
    def test_single_and_dual_stack_v4_first(self):
        assert [str(n) for n in plan_inputs.parse_cluster_cidrs("10.244.0.0/16")] == ["10.244.0.0/16"]
        got = plan_inputs.parse_cluster_cidrs(["fd00:10:244::/56", "10.244.0.0/16"])
        assert [str(n) for n in got] == ["10.244.0.0/16", "fd00:10:244::/56"]

    def test_host_address_suggests_network(self):
        with pytest.raises(PlanError, match=r"10\.244\.1\.5/16 is a host address.*did you mean 10\.244\.0\.0/16"):
            plan_inputs.parse_cluster_cidrs("10.244.1.5/16")

    @pytest.mark.parametrize("bad", ["10.244.0.0", "banana", "10.244.0.0/33", "10.256.0.0/16", 42])
    def test_unparsable(self, bad):
        with pytest.raises(PlanError, match="cluster_cidr"):
            plan_inputs.parse_cluster_cidrs(bad)

    def test_two_of_one_family(self):
        with pytest.raises(PlanError, match="two IPv4 entries"):
            plan_inputs.parse_cluster_cidrs(["10.244.0.0/16", "10.245.0.0/16"])

    def test_empty(self):
        with pytest.raises(PlanError, match="empty"):
            plan_inputs.parse_cluster_cidrs([])


class TestSmallRules:
    def test_gateway_and_vtep(self):
        assert node_blocks.gateway("10.244.3.0/24") == "10.244.3.1/24"
        assert node_blocks.vtep_ip("10.244.3.0/24") == "10.244.3.0"
        assert node_blocks.gateway("fd00:10:244:3::/64") == "fd00:10:244:3::1/64"
        assert node_blocks.vtep_ip("fd00:10:244:3::/64") == "fd00:10:244:3::"

    def test_vtep_mac_rule(self):
        digest = hashlib.sha256(b"flatnet-vtep:192.168.50.11").hexdigest()
        expected = "0e:" + ":".join(digest[i:i + 2] for i in range(0, 10, 2))
        assert node_blocks.vtep_mac("192.168.50.11") == expected
        assert re.fullmatch(r"0e(:[0-9a-f]{2}){5}", expected)
        assert node_blocks.vtep_mac("192.168.50.11") != node_blocks.vtep_mac("192.168.50.12")

    def test_vtep_mac_normalises_v6(self):
        assert node_blocks.vtep_mac("2001:DB8:0::1") == node_blocks.vtep_mac("2001:db8::1")

    def test_vtep_mac_refuses_garbage(self):
        with pytest.raises(PlanError):
            node_blocks.vtep_mac("192.168.50.11/24")

    def test_usable(self):
        assert node_blocks.usable_pod_count("10.244.0.0/24") == 253
        assert node_blocks.usable_pod_count("10.244.0.0/30") == 1
        assert node_blocks.usable_pod_count("10.244.0.0/31") == 0
        assert node_blocks.usable_pod_count("fd00::/126") == 2


# --------------------------------------------------------------------------- node blocks


class TestNodeCidrs:
    def test_sorted_lowest_first(self):
        got = node_blocks.node_cidrs("10.244.0.0/16", ["node3", "node1", "node2"])
        assert got == {"node1": ["10.244.0.0/24"], "node2": ["10.244.1.0/24"], "node3": ["10.244.2.0/24"]}

    def test_dual_stack_one_per_family(self):
        got = node_blocks.node_cidrs(["10.244.0.0/16", "fd00:10:244::/56"], ["a", "b"], prefix=25)
        assert got == {"a": ["10.244.0.0/25", "fd00:10:244::/64"], "b": ["10.244.0.128/25", "fd00:10:244:1::/64"]}

    def test_existing_kept_and_gaps_filled(self):
        got = node_blocks.node_cidrs("10.244.0.0/16", ["a", "b", "c"], existing={"c": "10.244.0.0/24", "gone": "10.244.1.0/24"})
        assert got == {"a": ["10.244.1.0/24"], "b": ["10.244.2.0/24"], "c": ["10.244.0.0/24"]}

    def test_pin_wins(self):
        got = node_blocks.node_cidrs("10.244.0.0/16", ["a", "b"], existing={"a": "10.244.0.0/24"}, pins={"a": "10.244.7.0/24"})
        assert got == {"a": ["10.244.7.0/24"], "b": ["10.244.0.0/24"]}

    def test_pin_outside(self):
        with pytest.raises(PlanError, match=r"10\.245\.0\.0/24 pinned for a is outside cluster_cidr 10\.244\.0\.0/16"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], pins={"a": "10.245.0.0/24"})

    def test_pin_wrong_size(self):
        with pytest.raises(PlanError, match=r"is a /25 but node_prefix is /24"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], pins={"a": "10.244.0.0/25"})

    def test_pin_host_address(self):
        with pytest.raises(PlanError, match=r"did you mean 10\.244\.0\.0/24"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], pins={"a": "10.244.0.7/24"})

    def test_pin_overlaps_other_pin(self):
        with pytest.raises(PlanError, match=r"10\.244\.3\.0/24 is wanted by b .* but a already has it"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a", "b"], pins={"a": "10.244.3.0/24", "b": "10.244.3.0/24"})

    def test_pin_overlaps_existing(self):
        with pytest.raises(PlanError, match="already has it"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a", "b"], pins={"a": "10.244.0.0/24"}, existing={"b": "10.244.0.0/24"})

    def test_pinned_twice_same_family(self):
        with pytest.raises(PlanError, match="pins two IPv4 blocks"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], pins={"a": ["10.244.0.0/24", "10.244.1.0/24"]})

    def test_pin_family_missing(self):
        with pytest.raises(PlanError, match="cluster_cidr has no IPv6 range"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], pins={"a": "fd00::/64"})

    def test_existing_outside_changed_cluster_needs_teardown(self):
        with pytest.raises(PlanError, match=r"outside cluster_cidr 10\.250\.0\.0/16; changing cluster_cidr needs a teardown"):
            node_blocks.node_cidrs("10.250.0.0/16", ["a"], existing={"a": "10.244.0.0/24"})

    def test_existing_with_old_prefix(self):
        with pytest.raises(PlanError, match="node_prefix is now /25; set node_prefix back to 24"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], prefix=25, existing={"a": "10.244.0.0/24"})

    def test_too_many_nodes(self):
        with pytest.raises(PlanError, match=r"holds 4 /24 node blocks but 5 nodes need one; set a longer node_prefix"):
            node_blocks.node_cidrs("10.244.0.0/22", list("abcde"))

    def test_exactly_full(self):
        assert len(node_blocks.node_cidrs("10.244.0.0/22", list("abcd"))) == 4

    @pytest.mark.parametrize("prefix", [16, 8])
    def test_prefix_not_longer(self, prefix):
        with pytest.raises(PlanError, match="node_prefix /%d is not longer than cluster_cidr" % prefix):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], prefix=prefix)

    def test_v4_prefix_without_pod_room(self):
        with pytest.raises(PlanError, match=r"node_prefix /31 leaves no address for pods.*use /30"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], prefix=31)

    def test_v6_delta_limit(self):
        with pytest.raises(PlanError, match=r"node_prefix_v6 /64 is 17 bits longer .* at most 16"):
            node_blocks.node_cidrs(["10.244.0.0/16", "fd00::/47"], ["a"])
        assert node_blocks.node_cidrs(["10.244.0.0/16", "fd00::/48"], ["a"])["a"][1] == "fd00::/64"

    def test_reserved_overlap(self):
        with pytest.raises(PlanError, match=r"cluster_cidr 10\.244\.0\.0/16 overlaps reserved range 10\.244\.128\.0/17"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a"], reserved=["10.244.128.0/17"])

    def test_duplicate_node_names(self):
        with pytest.raises(PlanError, match="duplicated: a"):
            node_blocks.node_cidrs("10.244.0.0/16", ["a", "a"])


# --------------------------------------------------------------------------- pod addresses


class TestPodIps:
    def test_from_two_upward_sorted(self):
        assert pod_addresses.pod_ips("10.244.1.0/24", ["web", "db"]) == {"db": ["10.244.1.2/24"], "web": ["10.244.1.3/24"]}

    def test_dual_stack_skips_network_and_gateway(self):
        got = pod_addresses.pod_ips(["fd00:1::/64", "10.244.1.0/24"], ["a"])
        assert got == {"a": ["10.244.1.2/24", "fd00:1::2/64"]}

    def test_smallest_block(self):
        assert pod_addresses.pod_ips("10.244.1.0/30", ["a"]) == {"a": ["10.244.1.2/30"]}

    def test_too_many_pods(self):
        with pytest.raises(PlanError, match=r"has 2 pods but its block 10\.244\.1\.0/30 holds only 1 .*node_prefix to 29"):
            pod_addresses.pod_ips("10.244.1.0/30", ["a", "b"])

    def test_exactly_full_block_never_uses_reserved(self):
        got = pod_addresses.pod_ips("10.244.1.0/29", list("abcde"))
        addrs = sorted(g[0] for g in got.values())
        assert addrs == [f"10.244.1.{i}/29" for i in range(2, 7)]

    def test_pins_honoured_others_fill(self):
        got = pod_addresses.pod_ips("10.244.1.0/24", ["a", "b", "c"], pins={"b": "10.244.1.2"})
        assert got == {"a": ["10.244.1.3/24"], "b": ["10.244.1.2/24"], "c": ["10.244.1.4/24"]}

    def test_pin_with_matching_prefix(self):
        assert pod_addresses.pod_ips("10.244.1.0/24", ["a"], pins={"a": "10.244.1.9/24"}) == {"a": ["10.244.1.9/24"]}

    def test_pin_with_other_prefix(self):
        with pytest.raises(PlanError, match=r"has prefix /16 .* write the bare address 10\.244\.1\.9"):
            pod_addresses.pod_ips("10.244.1.0/24", ["a"], pins={"a": "10.244.1.9/16"})

    @pytest.mark.parametrize("ip,reason", [
        ("10.244.2.9", r"outside the node's block 10\.244\.1\.0/24"),
        ("10.244.1.0", "the VTEP"),
        ("10.244.1.1", "the gateway"),
        ("10.244.1.255", "the broadcast address"),
        ("fd00::5", "has no IPv6 pod block"),
        ("10.244.1.x", "not a valid IP address"),
    ])
    def test_pin_rejected(self, ip, reason):
        with pytest.raises(PlanError, match=reason):
            pod_addresses.pod_ips("10.244.1.0/24", ["a"], pins={"a": ip})

    def test_pin_v6_gateway_rejected(self):
        with pytest.raises(PlanError, match="the gateway"):
            pod_addresses.pod_ips("fd00:1::/64", ["a"], pins={"a": "fd00:1::1"})

    def test_pin_taken_by_other_pin(self):
        with pytest.raises(PlanError, match="already pinned for pod a"):
            pod_addresses.pod_ips("10.244.1.0/24", ["a", "b"], pins={"a": "10.244.1.5", "b": "10.244.1.5"})

    def test_pin_two_of_one_family(self):
        with pytest.raises(PlanError, match="pins two IPv4 addresses"):
            pod_addresses.pod_ips("10.244.1.0/24", ["a"], pins={"a": ["10.244.1.5", "10.244.1.6"]})

    def test_existing_kept_invalid_replaced(self):
        got = pod_addresses.pod_ips("10.244.1.0/24", ["a", "b", "c"],
                                    existing={"c": "10.244.1.2", "b": "10.244.9.9", "gone": "10.244.1.3"})
        assert got == {"a": ["10.244.1.3/24"], "b": ["10.244.1.4/24"], "c": ["10.244.1.2/24"]}

    @pytest.mark.parametrize("name", ["Web", "a_b", "-a", "a-", "a.b", "x" * 64, "", "a b", "$(id)"])
    def test_bad_pod_names(self, name):
        with pytest.raises(PlanError, match="network namespace"):
            pod_addresses.pod_ips("10.244.1.0/24", [name])

    def test_good_pod_names(self):
        assert len(pod_addresses.pod_ips("10.244.1.0/24", ["a", "0", "x" * 63, "node1-pod-1"])) == 4

    def test_duplicate_pod(self):
        with pytest.raises(PlanError, match="listed twice"):
            pod_addresses.pod_ips("10.244.1.0/24", ["a", "a"])


# --------------------------------------------------------------------------- build_plan


class TestBuildPlan:
    def test_structure(self):
        nodes = three_nodes()
        nodes["node2"]["pods"] = [pod("b"), pod("a", command=["sleep", "60"])]
        plan = cluster_plan.build_plan(nodes)
        assert set(plan) == {"cluster_cidrs", "service_cidr", "backend", "mtu", "masquerade", "vxlan", "nodes"}
        assert plan["cluster_cidrs"] == ["10.244.0.0/16"]
        assert plan["service_cidr"] == "10.96.0.0/12"
        assert plan["vxlan"] == {"vni": 1, "port": 8472, "device": "flatnet.1"}
        assert plan["mtu"] == 1500 and plan["backend"] == "host-gw" and plan["masquerade"] is True
        n2 = plan["nodes"]["node2"]
        assert n2["pod_cidrs"] == ["10.244.1.0/24"]
        assert n2["gateways"] == ["10.244.1.1/24"]
        assert n2["vtep_ips"] == ["10.244.1.0"]
        assert n2["vtep_mac"] == node_blocks.vtep_mac("192.168.50.12")
        assert n2["underlay"] == {"interface": "eth0", "ip": "192.168.50.12", "prefix": 24,
                                  "network": "192.168.50.0/24", "mtu": 1500}
        assert n2["pods"] == [{"name": "a", "ips": ["10.244.1.2/24"], "command": ["sleep", "60"]},
                              {"name": "b", "ips": ["10.244.1.3/24"], "command": None}]
        assert "peers" not in n2  # derived where used: the plan stays linear in nodes
        assert peer_views.peers_of(plan, "node2") == [
            {"name": "node1", "mode": "direct", "underlay_ip": "192.168.50.11", "pod_cidrs": ["10.244.0.0/24"],
             "vtep_ips": ["10.244.0.0"], "vtep_mac": node_blocks.vtep_mac("192.168.50.11")},
            {"name": "node3", "mode": "direct", "underlay_ip": "192.168.50.13", "pod_cidrs": ["10.244.2.0/24"],
             "vtep_ips": ["10.244.2.0"], "vtep_mac": node_blocks.vtep_mac("192.168.50.13")},
        ]

    def test_deterministic_regardless_of_input_order(self):
        nodes = three_nodes()
        reversed_nodes = dict(reversed(list(copy.deepcopy(nodes).items())))
        assert cluster_plan.build_plan(nodes) == cluster_plan.build_plan(reversed_nodes) == cluster_plan.build_plan(nodes)

    def test_dual_stack(self):
        nodes = {"a": node("192.168.50.11", pods=[pod("p", ip=["fd00:10:244::9", "10.244.0.9"])]),
                 "b": node("192.168.50.12")}
        plan = cluster_plan.build_plan(nodes, cluster_cidr=["fd00:10:244::/56", "10.244.0.0/16"], backend="vxlan")
        assert plan["cluster_cidrs"] == ["10.244.0.0/16", "fd00:10:244::/56"]
        a = plan["nodes"]["a"]
        assert a["pod_cidrs"] == ["10.244.0.0/24", "fd00:10:244::/64"]
        assert a["gateways"] == ["10.244.0.1/24", "fd00:10:244::1/64"]
        assert a["vtep_ips"] == ["10.244.0.0", "fd00:10:244::"]
        assert a["pods"][0]["ips"] == ["10.244.0.9/24", "fd00:10:244::9/64"]
        assert plan["nodes"]["b"]["pod_cidrs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]

    def test_peer_modes(self):
        nodes = {"a": node("192.168.50.11"), "b": node("192.168.50.12"),
                 "c": node("192.168.60.13", network="192.168.60.0/24")}
        auto = cluster_plan.build_plan(nodes, backend="auto")
        assert {p["name"]: p["mode"] for p in peer_views.peers_of(auto, "a")} == {"b": "direct", "c": "vxlan"}
        assert {p["name"]: p["mode"] for p in peer_views.peers_of(auto, "c")} == {"a": "vxlan", "b": "vxlan"}
        assert auto["mtu"] == 1450
        vx = cluster_plan.build_plan(nodes, backend="vxlan")
        assert {p["mode"] for n in vx["nodes"] for p in peer_views.peers_of(vx, n)} == {"vxlan"}
        with pytest.raises(PlanError, match=r"host-gw .* a \(192\.168\.50\.0/24\) and c \(192\.168\.60\.0/24\) .* use backend vxlan or auto"):
            cluster_plan.build_plan(nodes, backend="host-gw")

    def test_auto_all_adjacent_keeps_underlay_mtu(self):
        assert cluster_plan.build_plan(three_nodes(mtu=9000), backend="auto")["mtu"] == 9000

    def test_mtu_is_lowest_underlay(self):
        nodes = three_nodes()
        nodes["node3"]["underlay"]["mtu"] = 1400
        assert cluster_plan.build_plan(nodes)["mtu"] == 1400
        assert cluster_plan.build_plan(nodes, backend="vxlan")["mtu"] == 1350

    def test_mtu_v6_underlay(self):
        nodes = {"a": node("fd00:50::11", network="fd00:50::/64"), "b": node("fd00:50::12", network="fd00:50::/64")}
        plan = cluster_plan.build_plan(nodes, backend="vxlan")
        assert plan["mtu"] == 1430
        assert peer_views.peers_of(plan, "a")[0]["underlay_ip"] == "fd00:50::12"

    def test_mtu_given(self):
        assert cluster_plan.build_plan(three_nodes(), backend="vxlan", mtu=1400)["mtu"] == 1400

    @pytest.mark.parametrize("kw,msg", [
        ({"mtu": 575}, r"pod MTU 575 \(given\) is too small: IPv4 needs at least 576"),
        ({"mtu": 1279, "backend": "vxlan", "cluster_cidr": ["10.244.0.0/16", "fd00::/56"]}, "IPv6 needs at least 1280"),
        ({"backend": "vxlan", "cluster_cidr": "fd00::/56"}, r"pod MTU 1250 \(computed .*minus VXLAN"),
        ({"mtu": "big"}, "is not an integer"),
    ])
    def test_mtu_too_small(self, kw, msg):
        nodes = three_nodes(mtu=1300)
        with pytest.raises(PlanError, match=msg):
            cluster_plan.build_plan(nodes, **kw)

    @pytest.mark.parametrize("kw,msg", [
        ({"backend": "calico"}, "backend 'calico' is not supported; use one of: host-gw, vxlan, auto"),
        ({"vxlan": {"vni": 0}}, "flatnet_vxlan_vni 0 is out of range; use an integer from 1 to 16777215"),
        ({"vxlan": {"vni": 16777216}}, "flatnet_vxlan_vni 16777216 is out of range"),
        ({"vxlan": {"port": 65536}}, "flatnet_vxlan_port 65536 is out of range; use a UDP port from 1 to 65535"),
        ({"vxlan": {"device": "a/b"}}, "flatnet_vxlan_device 'a/b' may only hold letters"),
        ({"vxlan": {"device": "x" * 16}}, "is 16 bytes long; Linux interface names have at most 15"),
        ({"service_cidr": "10.244.0.0/20"},
         r"flatnet_cluster_cidr 10\.244\.0\.0/16 overlaps flatnet_service_cidr 10\.244\.0\.0/20"),
        ({"cluster_cidr": "10.0.0.0/8"}, "overlaps flatnet_service_cidr 10.96.0.0/12"),
        ({"cluster_cidr": "192.168.0.0/16"}, r"overlaps the underlay network of node1 192\.168\.50\.0/24"),
        ({"reserved_cidrs": ["10.244.200.0/24"]}, "overlaps flatnet_reserved_cidrs entry 10.244.200.0/24"),
        ({"reserved_cidrs": ["nope"]}, "reserved_cidrs entry 'nope'"),
        ({"service_cidr": "10.96.0.1/12"}, "did you mean 10.96.0.0/12"),
    ])
    def test_validation_errors(self, kw, msg):
        with pytest.raises(PlanError, match=re.escape(msg) if "\\" not in msg else msg):
            cluster_plan.build_plan(three_nodes(), **kw)

    def test_missing_underlay_ip(self):
        nodes = three_nodes()
        nodes["node2"]["underlay"] = {}
        with pytest.raises(PlanError, match="node node2 has no underlay IP.*flatnet_underlay_interface"):
            cluster_plan.build_plan(nodes)

    def test_duplicate_underlay_ip(self):
        nodes = three_nodes()
        nodes["node3"]["underlay"]["ip"] = "192.168.50.11"
        with pytest.raises(PlanError, match=r"nodes node1 and node3 have the same underlay IP 192\.168\.50\.11"):
            cluster_plan.build_plan(nodes)

    def test_mixed_underlay_families(self):
        nodes = {"a": node("192.168.50.11"), "b": node("fd00:50::12", network="fd00:50::/64")}
        with pytest.raises(PlanError, match="mix IPv4 .*and IPv6"):
            cluster_plan.build_plan(nodes, backend="vxlan")

    def test_pod_name_rule_and_duplicates(self):
        nodes = three_nodes()
        nodes["node1"]["pods"] = [pod("Bad_Name")]
        with pytest.raises(PlanError, match="'Bad_Name' on node1 .*network namespace"):
            cluster_plan.build_plan(nodes)
        nodes["node1"]["pods"] = [pod("x"), pod("x")]
        with pytest.raises(PlanError, match="pod x is listed twice on node1"):
            cluster_plan.build_plan(nodes)

    def test_too_many_pods(self):
        nodes = three_nodes()
        nodes["node1"]["pods"] = [pod(f"p{i}") for i in range(6)]
        with pytest.raises(PlanError, match=r"node1 has 6 pods but its block 10\.244\.0\.0/29 holds only 5"):
            cluster_plan.build_plan(nodes, node_prefix=29)

    def test_pins(self):
        nodes = three_nodes()
        nodes["node1"]["pod_cidr"] = "10.244.9.0/24"
        nodes["node1"]["pods"] = [pod("a", ip="10.244.9.50")]
        plan = cluster_plan.build_plan(nodes)
        assert plan["nodes"]["node1"]["pod_cidrs"] == ["10.244.9.0/24"]
        assert plan["nodes"]["node1"]["pods"][0]["ips"] == ["10.244.9.50/24"]
        assert plan["nodes"]["node2"]["pod_cidrs"] == ["10.244.0.0/24"]

    def test_pin_conflicts_with_recorded_node(self):
        nodes = three_nodes()
        nodes["node2"]["recorded"] = {"pod_cidrs": ["10.244.0.0/24"]}
        nodes["node1"]["pod_cidr"] = "10.244.0.0/24"
        with pytest.raises(PlanError, match=r"10\.244\.0\.0/24 is wanted by node2 \(recorded on node2\) but node1 already has it"):
            cluster_plan.build_plan(nodes)

    def test_pinned_pod_ip_taken_by_recorded_pod(self):
        nodes = three_nodes()
        nodes["node1"]["recorded"] = {"pod_cidrs": ["10.244.0.0/24"], "pods": {"old": ["10.244.0.2"]}}
        nodes["node1"]["pods"] = [pod("old"), pod("new", ip="10.244.0.2")]
        with pytest.raises(PlanError, match=r"10\.244\.0\.2 pinned for pod new on node1 is in use by pod old"):
            cluster_plan.build_plan(nodes)

    def test_recorded_kept_and_new_node_fills_gap(self):
        nodes = three_nodes()
        nodes["node3"]["recorded"] = {"pod_cidrs": ["10.244.0.0/24"], "pods": {"q": ["10.244.0.7"]}}
        nodes["node3"]["pods"] = [pod("p"), pod("q")]
        plan = cluster_plan.build_plan(nodes)
        assert {n: v["pod_cidrs"][0] for n, v in plan["nodes"].items()} == {
            "node1": "10.244.1.0/24", "node2": "10.244.2.0/24", "node3": "10.244.0.0/24"}
        assert [p["ips"] for p in plan["nodes"]["node3"]["pods"]] == [["10.244.0.2/24"], ["10.244.0.7/24"]]

    def test_recorded_outside_new_cluster_cidr(self):
        nodes = three_nodes()
        nodes["node1"]["recorded"] = {"pod_cidrs": ["10.244.0.0/24"]}
        with pytest.raises(PlanError, match=r"node1 uses 10\.244\.0\.0/24 \(recorded on node1\), which is outside "
                                            r"flatnet_cluster_cidr 10\.250\.0\.0/16; changing flatnet_cluster_cidr "
                                            r"needs a teardown"):
            cluster_plan.build_plan(nodes, cluster_cidr="10.250.0.0/16")

    def test_recorded_v6_when_v6_removed(self):
        nodes = three_nodes()
        nodes["node1"]["recorded"] = {"pod_cidrs": ["10.244.0.0/24", "fd00::/64"]}
        with pytest.raises(PlanError, match="no longer has an IPv6 range; changing flatnet_cluster_cidr needs a teardown"):
            cluster_plan.build_plan(nodes)

    def test_adding_v6_family_keeps_v4(self):
        nodes = three_nodes()
        nodes["node2"]["recorded"] = {"pod_cidrs": ["10.244.0.0/24"]}
        plan = cluster_plan.build_plan(nodes, cluster_cidr=["10.244.0.0/16", "fd00::/56"], backend="auto")
        assert plan["nodes"]["node2"]["pod_cidrs"] == ["10.244.0.0/24", "fd00:0:0:1::/64"]
        assert plan["nodes"]["node1"]["pod_cidrs"] == ["10.244.1.0/24", "fd00::/64"]

    def test_cache_used_for_nodes_without_records(self):
        first = cluster_plan.build_plan(three_nodes())
        nodes = {"node0": node("192.168.50.10"), **three_nodes()}
        plan = cluster_plan.build_plan(nodes, cached=first)
        for name in ("node1", "node2", "node3"):
            assert plan["nodes"][name]["pod_cidrs"] == first["nodes"][name]["pod_cidrs"]
        assert plan["nodes"]["node0"]["pod_cidrs"] == ["10.244.3.0/24"]

    def test_stale_cache_ignored_for_nodes_in_play(self):
        first = cluster_plan.build_plan(three_nodes())
        plan = cluster_plan.build_plan(three_nodes(), cluster_cidr="10.250.0.0/16", cached=first)
        assert plan["nodes"]["node1"]["pod_cidrs"] == ["10.250.0.0/24"]

    def test_limit_keeps_out_of_play_nodes(self):
        nodes = three_nodes()
        nodes["node2"]["pods"] = [pod("x")]
        first = cluster_plan.build_plan(nodes, backend="auto")
        only1 = {"node1": three_nodes()["node1"]}
        plan = cluster_plan.build_plan(only1, backend="auto", cached=first,
                                       inventory_nodes=["node1", "node2", "node3"])
        assert sorted(plan["nodes"]) == ["node1", "node2", "node3"]
        assert plan["nodes"]["node2"] == first["nodes"]["node2"]
        assert [p["name"] for p in peer_views.peers_of(plan, "node1")] == ["node2", "node3"]
        assert peer_views.peers_of(plan, "node1") == peer_views.peers_of(first, "node1")

    def test_out_of_play_cached_node_in_old_cluster_cidr(self):
        first = cluster_plan.build_plan(three_nodes())
        with pytest.raises(PlanError, match=r"node2 uses 10\.244\.1\.0/24 \(cached plan; node not in this play\)"):
            cluster_plan.build_plan({"node1": three_nodes()["node1"]}, cluster_cidr="10.250.0.0/16", cached=first,
                                    inventory_nodes=["node1", "node2"])

    def test_nodes_not_in_inventory_dropped(self):
        first = cluster_plan.build_plan(three_nodes())
        nodes = {"node3": three_nodes()["node3"], "node4": node("192.168.50.14")}
        nodes["node3"]["recorded"] = {"pod_cidrs": first["nodes"]["node3"]["pod_cidrs"]}
        plan = cluster_plan.build_plan(nodes, cached=first, inventory_nodes=["node3", "node4"])
        assert sorted(plan["nodes"]) == ["node3", "node4"]
        assert plan["nodes"]["node3"]["pod_cidrs"] == ["10.244.2.0/24"]
        assert plan["nodes"]["node4"]["pod_cidrs"] == ["10.244.0.0/24"]  # node1's block was freed

    def test_node_pin_change_readdresses_pods(self):
        nodes = three_nodes()
        nodes["node1"]["recorded"] = {"pod_cidrs": ["10.244.0.0/24"], "pods": {"a": ["10.244.0.5"]}}
        nodes["node1"]["pods"] = [pod("a")]
        nodes["node1"]["pod_cidr"] = "10.244.8.0/24"
        plan = cluster_plan.build_plan(nodes)
        assert plan["nodes"]["node1"]["pods"][0]["ips"] == ["10.244.8.2/24"]

    def test_service_cidr_list(self):
        plan = cluster_plan.build_plan(three_nodes(), cluster_cidr=["10.244.0.0/16", "fd00:244::/56"], backend="vxlan",
                                       service_cidr=["10.96.0.0/12", "fd00:96::/112"])
        assert plan["service_cidr"] == ["10.96.0.0/12", "fd00:96::/112"]

    def test_no_nodes(self):
        plan = cluster_plan.build_plan({})
        assert plan["nodes"] == {} and plan["mtu"] == 1500


# --------------------------------------------------------------------------- properties

NAMES = [f"n{i}" for i in range(8)]


def _blocks_of(plan):
    return [IPNetwork(c) for n in plan["nodes"].values() for c in n["pod_cidrs"]]


def _check_invariants(plan, forbidden):
    blocks = _blocks_of(plan)
    clusters = [IPNetwork(c) for c in plan["cluster_cidrs"]]
    for i, a in enumerate(blocks):
        assert any(a in c for c in clusters)
        for b in blocks[i + 1:]:
            assert not (a.version == b.version and a.first <= b.last and b.first <= a.last), (a, b)
        for f in forbidden:
            assert not (a.version == f.version and a.first <= f.last and f.first <= a.last), (a, f)
    for name, entry in plan["nodes"].items():
        own_blocks = [IPNetwork(c) for c in entry["pod_cidrs"]]
        assert entry["gateways"] == [node_blocks.gateway(b) for b in own_blocks]
        assert entry["vtep_ips"] == [str(b.network) for b in own_blocks]
        assert [p["name"] for p in peer_views.peers_of(plan, name)] == sorted(n for n in plan["nodes"] if n != name)
        seen = set()
        for p in entry["pods"]:
            assert len(p["ips"]) == len(own_blocks)
            for text, block in zip(p["ips"], own_blocks):
                ip = IPNetwork(text)
                assert ip.prefixlen == block.prefixlen
                assert block.first + 2 <= int(ip.ip) <= block.last
                if block.version == 4:
                    assert int(ip.ip) != block.last
                assert text not in seen
                seen.add(text)


@st.composite
def v4_setup(draw):
    cluster_prefix = draw(st.integers(8, 24))
    base = draw(st.integers(0, (1 << cluster_prefix) - 1)) << (32 - cluster_prefix)
    cluster = IPNetwork(f"{IPAddress(base, 4)}/{cluster_prefix}")
    node_prefix = draw(st.integers(cluster_prefix + 1, min(30, cluster_prefix + 6)))

    def rand_net():
        p = draw(st.integers(4, 30))
        return str(IPNetwork(f"{IPAddress(draw(st.integers(0, 2**32 - 1)), 4)}/{p}").cidr)

    service = rand_net()
    reserved = [rand_net() for _unused in range(draw(st.integers(0, 2)))]
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=8, unique=True))
    pods = {n: draw(st.integers(0, 3)) for n in names}
    return cluster, node_prefix, service, reserved, names, pods


def _underlay_node(i, pods):
    # pod names are unique across the cluster
    return node(f"192.168.50.{10 + i}", pods=[pod(f"n{i}-p{j}") for j in range(pods)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v4_setup())
def test_property_v4_plan_valid_or_error(setup):
    cluster, node_prefix, service, reserved, names, pods = setup
    nodes = {n: _underlay_node(i, pods[n]) for i, n in enumerate(names)}
    forbidden = [IPNetwork(service), IPNetwork("192.168.50.0/24")] + [IPNetwork(r) for r in reserved]
    overlap = any(cluster.first <= f.last and f.first <= cluster.last for f in forbidden)
    # ranges that can never carry pods are refused, wherever they are given
    overlap = overlap or any(plan_inputs.unusable_range(n) for n in [cluster, IPNetwork(service)] + forbidden[2:])
    too_many_nodes = len(names) > 2 ** (node_prefix - cluster.prefixlen)
    too_many_pods = max(pods.values()) > 2 ** (32 - node_prefix) - 3
    kw = dict(cluster_cidr=str(cluster), node_prefix=node_prefix, service_cidr=service, reserved_cidrs=reserved)
    if overlap or too_many_nodes or too_many_pods:
        with pytest.raises(PlanError):
            cluster_plan.build_plan(nodes, **kw)
        return
    plan = cluster_plan.build_plan(nodes, **kw)
    _check_invariants(plan, forbidden)
    # lowest blocks first, in sorted name order
    size = 2 ** (32 - node_prefix)
    assert [plan["nodes"][n]["pod_cidrs"][0] for n in sorted(names)] == [
        f"{IPAddress(cluster.first + i * size, 4)}/{node_prefix}" for i in range(len(names))]
    assert plan == cluster_plan.build_plan(copy.deepcopy(nodes), **kw)


@st.composite
def churn(draw):
    dual = draw(st.booleans())
    cluster_prefix = draw(st.integers(12, 22))
    node_prefix = draw(st.integers(cluster_prefix + 3, min(29, cluster_prefix + 6)))
    clusters = [str(IPNetwork(f"10.{draw(st.integers(0, 255))}.0.0/{cluster_prefix}").cidr)]
    v6_prefix = None
    if dual:
        v6_cluster_prefix = draw(st.integers(48, 120))
        v6_prefix = draw(st.integers(v6_cluster_prefix + 3, min(125, v6_cluster_prefix + 16)))
        clusters.append(f"fd00:{draw(st.integers(0, 0xffff)):x}::/{v6_cluster_prefix}")
    steps = draw(st.lists(
        st.tuples(
            st.sets(st.sampled_from(NAMES), min_size=1),           # inventory
            st.sets(st.sampled_from(NAMES)),                       # --limit (intersected)
            st.dictionaries(st.sampled_from(NAMES), st.sets(st.sampled_from(["a", "b", "c", "d"]), max_size=3)),
        ),
        min_size=1, max_size=6))
    return clusters, node_prefix, v6_prefix, steps


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(churn())
def test_property_churn_never_moves_existing(params):
    clusters, node_prefix, v6_prefix, steps = params
    kw = dict(cluster_cidr=clusters, node_prefix=node_prefix, node_prefix_v6=v6_prefix or 64,
              service_cidr="172.16.0.0/12", backend="auto")
    cache = None
    # what each node has recorded (survives --limit: the node keeps its state)
    records: dict[str, dict] = {}
    for inventory, limit, pod_sets in steps:
        play = sorted((limit & inventory) or inventory)
        nodes = {}
        for n in play:
            entry = node(f"192.168.50.{10 + NAMES.index(n)}",
                         pods=[pod(f"{n}-{p}") for p in sorted(pod_sets.get(n, ()))])
            entry["recorded"] = records.get(n, {})
            nodes[n] = entry
        plan = cluster_plan.build_plan(nodes, inventory_nodes=sorted(inventory), cached=cache, **kw)
        _check_invariants(plan, [IPNetwork("172.16.0.0/12"), IPNetwork("192.168.50.0/24")])
        assert set(play) <= set(plan["nodes"]) <= set(inventory)
        if cache:
            for n, old in cache["nodes"].items():
                if n in plan["nodes"]:
                    assert plan["nodes"][n]["pod_cidrs"] == old["pod_cidrs"], n
                    old_pods = {p["name"]: p["ips"] for p in old["pods"]}
                    for p in plan["nodes"][n]["pods"]:
                        if p["name"] in old_pods:
                            assert p["ips"] == old_pods[p["name"]], (n, p)
                    if n not in play:
                        assert plan["nodes"][n]["underlay"] == old["underlay"]
        assert plan == cluster_plan.build_plan(copy.deepcopy(nodes), inventory_nodes=sorted(inventory),
                                               cached=copy.deepcopy(cache), **kw)
        for n in play:
            entry = plan["nodes"][n]
            records[n] = {"pod_cidrs": entry["pod_cidrs"],
                          "pods": {p["name"]: [i.split("/")[0] for i in p["ips"]] for p in entry["pods"]}}
        for n in list(records):
            if n not in inventory:
                del records[n]  # a node removed from the inventory is torn down
        cache = plan


def test_bare_pod_names_are_accepted():
    underlay = {"interface": "eth0", "ip": "192.168.50.11", "prefix": 24, "network": "192.168.50.0/24", "mtu": 1500}
    plan = cluster_plan.build_plan({"node1": {"underlay": underlay, "pods": ["node1-pod-1", {"name": "web"}]}})
    assert [p["name"] for p in plan["nodes"]["node1"]["pods"]] == ["node1-pod-1", "web"]
    assert plan["nodes"]["node1"]["pods"][0]["ips"] == ["10.244.0.2/24"]


def test_dual_stack_over_ipv4_underlay_needs_the_tunnel():
    def node(ip):
        return {"underlay": {"interface": "eth0", "ip": ip, "prefix": 24, "network": "192.168.50.0/24", "mtu": 1500}}

    nodes = {"a": node("192.168.50.11"), "b": node("192.168.50.12")}
    dual = ["10.244.0.0/16", "fd00:10:244::/56"]
    with pytest.raises(PlanError, match="host-gw cannot carry IPv6 pod traffic over the IPv4 underlay"):
        cluster_plan.build_plan(nodes, cluster_cidr=dual, backend="host-gw")
    auto = cluster_plan.build_plan(nodes, cluster_cidr=dual, backend="auto")
    assert [p["mode"] for p in peer_views.peers_of(auto, "a")] == ["vxlan"]
    assert [p["mode"] for p in peer_views.peers_of(cluster_plan.build_plan(nodes, backend="auto"), "a")] == ["direct"]


# --- the peer view is derived, not stored: it must agree with what the plan sized ------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["192.168.50.0/24", "192.168.0.0/16", "192.168.60.0/24",
                                           "10.9.0.0/24"]),
                          st.integers(min_value=1, max_value=250)),
                min_size=1, max_size=12, unique_by=lambda t: t[1]),
       st.sampled_from(["auto", "vxlan"]))
def test_peer_view_matches_the_plan(members, backend):
    nodes = {}
    for i, (network, host) in enumerate(members):
        net = IPNetwork(network)
        ip = str(IPAddress(net.first + host if net.prefixlen == 24 else net.first + 50 * 256 + host))
        nodes[f"n{i}"] = {"underlay": {"interface": "eth0", "ip": ip, "prefix": net.prefixlen,
                                       "network": network, "mtu": 1500}}
    plan = cluster_plan.build_plan(nodes, backend=backend)
    underlays = {n: plan_inputs._underlay(n, nodes[n]["underlay"]) for n in nodes}
    # Brute force: every pair.
    remote = sorted(a for a in nodes if any(b != a and not peer_views._adjacent(underlays[a], underlays[b]) for b in nodes))
    assert peer_views._nodes_with_a_remote_peer(sorted(nodes), underlays) == remote
    tunnelled = sorted(n for n in nodes if any(p["mode"] == "vxlan" for p in peer_views.peers_of(plan, n)))
    assert tunnelled == (sorted(nodes) if backend == "vxlan" and len(nodes) > 1 else remote)
    assert plan["mtu"] == (1450 if tunnelled else 1500)
    for a in nodes:
        for p in peer_views.peers_of(plan, a):
            want = "vxlan" if backend == "vxlan" or not peer_views._adjacent(underlays[a], underlays[p["name"]]) else "direct"
            assert p["mode"] == want
