# SPDX-License-Identifier: GPL-3.0-or-later
"""The plan's one validation step, table-driven: every bad input is refused by build_plan (what
the plan action runs on the controller, before any node is changed) with one message that
names the variable as the user wrote it and the bad value; values right at the edges pass."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan, plan_inputs
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def _node(ip, mtu=1500, network="192.168.50.0/24", interface="eth0"):
    return {
        "underlay": {"interface": interface, "ip": ip, "prefix": int(network.split("/")[1]),
                     "network": network, "mtu": mtu, "family": 6 if ":" in ip else 4,
                     "chosen_by": "default-route"},
        "recorded": {},
        "pod_cidr": None,
        "pods": [],
    }


def _nodes():
    return {"node1": _node("192.168.50.11"), "node2": _node("192.168.50.12"), "node3": _node("192.168.50.13")}


def _v6_nodes():
    return {"node1": _node("fd00:50::11", network="fd00:50::/64"),
            "node2": _node("fd00:50::12", network="fd00:50::/64")}


def _routed_nodes():
    """node3 is on another subnet: with auto, node1/node2 reach it over VXLAN."""
    nodes = _nodes()
    nodes["node3"] = _node("192.168.60.13", network="192.168.60.0/24")
    return nodes


def plan(kw=None, mods=None, nodes=None, cached=None, inventory=None):
    """build_plan on three nodes; ``mods``: {node: {request key: value}}."""
    nodes = copy.deepcopy(nodes if nodes is not None else _nodes())
    for name, changes in (mods or {}).items():
        for key, value in changes.items():
            if key == "underlay":
                nodes[name]["underlay"].update(value)
            else:
                nodes[name][key] = value
    return cluster_plan.build_plan(nodes, cached=cached, inventory_nodes=inventory, **(kw or {}))


def _pods(*entries):
    return {"node1": {"pods": list(entries)}}


# (id, build_plan keywords, node modifications, nodes factory or None, fragments the message holds)
BAD = [
    # ------------------------------------------------------------------ names
    ("pod-name-trailing-newline", {}, _pods("web\n"), None, ["pod name 'web\\n' on node1 (flatnet_pods)"]),
    ("pod-name-upper-case", {}, _pods("Web"), None, ["'Web'", "flatnet_pods", "DNS label"]),
    ("pod-name-too-long", {}, _pods("x" * 64), None, ["'" + "x" * 64 + "'", "flatnet_pods"]),
    ("pod-name-not-a-string", {}, _pods({"name": 123}), None, ["pod name 123 on node1 (flatnet_pods)"]),
    ("pod-name-shell", {}, _pods("$(id)"), None, ["'$(id)'", "flatnet_pods"]),
    ("bridge-trailing-newline", {"bridge": "cni0\n"}, None, None, ["flatnet_bridge 'cni0\\n' on node1"]),
    ("bridge-16-bytes", {"bridge": "b" * 16}, None, None, ["flatnet_bridge '" + "b" * 16 + "'", "16 bytes"]),
    ("bridge-hash", {"bridge": "br#1"}, None, None, ["flatnet_bridge 'br#1'"]),
    ("bridge-quote", {"bridge": 'br"x'}, None, None, ["flatnet_bridge 'br\"x'"]),
    ("bridge-reserved-all", {"bridge": "all"}, None, None, ["flatnet_bridge 'all'", "reserved"]),
    ("bridge-not-a-string", {"bridge": 5}, None, None, ["flatnet_bridge 5", "must be a string"]),
    ("bridge-per-node", {}, {"node2": {"bridge": "br pods"}}, None, ["flatnet_bridge 'br pods' on node2"]),
    ("vxlan-device-space", {"vxlan": {"device": "flatnet 1"}}, None, None, ["flatnet_vxlan_device 'flatnet 1'"]),
    ("vxlan-device-newline", {"vxlan": {"device": "flatnet.1\n"}}, None, None,
     ["flatnet_vxlan_device 'flatnet.1\\n'"]),
    ("vxlan-device-16-bytes", {"vxlan": {"device": "vxlan-device-016"}}, None, None,
     ["flatnet_vxlan_device 'vxlan-device-016'", "16 bytes"]),
    ("vxlan-device-dash-first", {"vxlan": {"device": "-vx"}}, None, None, ["flatnet_vxlan_device '-vx'"]),
    ("vxlan-device-batch-quote", {"vxlan": {"device": "vx'1"}}, None, None, ["flatnet_vxlan_device \"vx'1\""]),
    ("bridge-equals-vxlan-device", {"bridge": "flatnet.1"}, None, None,
     ["flatnet_bridge and flatnet_vxlan_device are both 'flatnet.1' on node1"]),
    ("bridge-equals-underlay", {"bridge": "eth0"}, None, None,
     ["flatnet_bridge 'eth0' is the underlay interface of node1"]),
    ("vxlan-device-equals-underlay", {"vxlan": {"device": "eth0"}}, None, None,
     ["flatnet_vxlan_device 'eth0' is the underlay interface of node1"]),
    ("bridge-equals-set-underlay", {"bridge": "ens3"},
     {"node2": {"underlay": {"interface": "ens3", "chosen_by": "interface"}}}, None,
     ["flatnet_bridge 'ens3' is the underlay interface of node2 (set by flatnet_underlay_interface)",
      "or set flatnet_underlay_interface to the link that carries node-to-node traffic"]),
    # flatnet_underlay_interface: cni0 makes the bridge (and its pod network) the underlay: told as such,
    # not as the bridge's network overlapping the cluster CIDR
    ("underlay-is-the-bridge", {}, {"node1": {"underlay": {"interface": "cni0", "ip": "10.244.0.1",
                                                           "network": "10.244.0.0/24", "chosen_by": "interface"}}},
     None, ["flatnet_bridge 'cni0' is the underlay interface of node1 (set by flatnet_underlay_interface)"]),
    ("underlay-interface-bad-name", {}, {"node1": {"underlay": {"interface": "eth#0", "chosen_by": "interface"}}},
     None, ["underlay interface 'eth#0' of node1", "flatnet_underlay_interface"]),
    # ------------------------------------------------------------------ numbers
    ("pods-per-node-negative", {"pods_per_node": -1}, None, None,
     ["flatnet_pods_per_node -1 on node1 is out of range"]),
    ("pods-per-node-negative-per-node", {}, {"node2": {"pods_per_node": -3}}, None,
     ["flatnet_pods_per_node -3 on node2"]),
    ("pods-per-node-negative-string", {"pods_per_node": "-1"}, None, None, ["flatnet_pods_per_node '-1'"]),
    ("pods-per-node-bool", {"pods_per_node": True}, None, None, ["flatnet_pods_per_node True", "not an integer"]),
    ("pods-per-node-float", {"pods_per_node": 2.5}, None, None, ["flatnet_pods_per_node 2.5", "not an integer"]),
    ("pods-per-node-word", {"pods_per_node": "three"}, None, None, ["flatnet_pods_per_node 'three'"]),
    ("pods-per-node-bad-node-name", {}, {"Node_1": {"pods_per_node": 1}},
     lambda: {"Node_1": _node("192.168.50.11")}, ["flatnet_pods_per_node of Node_1", "'Node_1-pod-1'"]),
    ("vxlan-port-zero", {"vxlan": {"port": 0}}, None, None, ["flatnet_vxlan_port 0 is out of range", "1 to 65535"]),
    ("vxlan-port-too-big", {"vxlan": {"port": 65536}}, None, None, ["flatnet_vxlan_port 65536"]),
    ("vxlan-port-bool", {"vxlan": {"port": True}}, None, None, ["flatnet_vxlan_port True", "not an integer"]),
    ("vxlan-port-word", {"vxlan": {"port": "vxlan"}}, None, None, ["flatnet_vxlan_port 'vxlan'"]),
    ("vxlan-vni-zero", {"vxlan": {"vni": 0}}, None, None, ["flatnet_vxlan_vni 0", "1 to 16777215"]),
    ("vxlan-vni-too-big", {"vxlan": {"vni": 16777216}}, None, None, ["flatnet_vxlan_vni 16777216"]),
    ("vxlan-vni-bool", {"vxlan": {"vni": False}}, None, None, ["flatnet_vxlan_vni False"]),
    ("mtu-above-underlay-less-vxlan", {"backend": "auto", "mtu": 1451}, None, _routed_nodes,
     ["flatnet_mtu 1451 is larger than node1 can carry", "underlay MTU is 1500", "at most 1450"]),
    ("mtu-above-underlay", {"mtu": 1501}, None, None,
     ["flatnet_mtu 1501 is larger than node1 can carry", "underlay MTU is 1500", "at most 1500"]),
    ("mtu-above-small-underlay", {"mtu": 1450}, {"node3": {"underlay": {"mtu": 1400}}}, None,
     ["flatnet_mtu 1450 is larger than node3 can carry", "underlay MTU is 1400", "at most 1400"]),
    ("mtu-above-v6-underlay-less-vxlan", {"backend": "vxlan", "mtu": 1431}, None, _v6_nodes,
     ["flatnet_mtu 1431", "underlay MTU is 1500", "less 70 bytes", "at most 1430"]),
    ("mtu-too-small", {"mtu": 67}, None, None, ["pod MTU 67 (given) is too small", "flatnet_mtu"]),
    ("mtu-too-small-v6", {"mtu": 1279, "backend": "vxlan", "cluster_cidr": ["10.244.0.0/16", "fd00:10:244::/56"]},
     None, None, ["pod MTU 1279 (given)", "IPv6 needs at least 1280", "flatnet_mtu"]),
    ("mtu-bool", {"mtu": True}, None, None, ["flatnet_mtu True", "not an integer"]),
    ("mtu-word", {"mtu": "jumbo"}, None, None, ["flatnet_mtu 'jumbo'"]),
    ("mtu-float", {"mtu": 1400.5}, None, None, ["flatnet_mtu 1400.5"]),
    ("node-prefix-bool", {"node_prefix": True}, None, None, ["flatnet_node_prefix True", "not an integer"]),
    ("node-prefix-word", {"node_prefix": "x"}, None, None, ["flatnet_node_prefix 'x'"]),
    ("node-prefix-negative", {"node_prefix": -1}, None, None, ["flatnet_node_prefix -1 is out of range"]),
    ("node-prefix-v6-bool", {"node_prefix_v6": False, "backend": "vxlan",
                             "cluster_cidr": ["10.244.0.0/16", "fd00:10:244::/56"]}, None, None,
     ["flatnet_node_prefix_v6 False"]),
    # ------------------------------------------------------------------ CIDRs
    ("cluster-loopback", {"cluster_cidr": "127.0.0.0/16"}, None, None,
     ["flatnet_cluster_cidr 127.0.0.0/16 overlaps 127.0.0.0/8 (loopback)", "can never carry pods"]),
    ("cluster-multicast", {"cluster_cidr": "224.1.0.0/16"}, None, None,
     ["flatnet_cluster_cidr 224.1.0.0/16", "multicast"]),
    ("cluster-link-local", {"cluster_cidr": "169.254.0.0/16"}, None, None,
     ["flatnet_cluster_cidr 169.254.0.0/16", "link-local"]),
    ("cluster-unspecified", {"cluster_cidr": "0.0.0.0/16"}, None, None,
     ["flatnet_cluster_cidr 0.0.0.0/16", "unspecified"]),
    ("cluster-everything", {"cluster_cidr": "0.0.0.0/0"}, None, None, ["flatnet_cluster_cidr 0.0.0.0/0"]),
    ("cluster-reserved", {"cluster_cidr": "240.0.0.0/16"}, None, None,
     ["flatnet_cluster_cidr 240.0.0.0/16", "reserved"]),
    ("cluster-broadcast", {"cluster_cidr": "255.255.255.255/32"}, None, None,
     ["flatnet_cluster_cidr 255.255.255.255/32", "broadcast"]),
    ("cluster-covers-loopback", {"cluster_cidr": "96.0.0.0/3"}, None, None,
     ["flatnet_cluster_cidr 96.0.0.0/3 overlaps 127.0.0.0/8"]),
    ("cluster-v6-link-local", {"cluster_cidr": ["10.244.0.0/16", "fe80::/56"], "backend": "vxlan"}, None, None,
     ["flatnet_cluster_cidr fe80::/56", "link-local"]),
    ("cluster-v6-multicast", {"cluster_cidr": ["10.244.0.0/16", "ff00::/56"], "backend": "vxlan"}, None, None,
     ["flatnet_cluster_cidr ff00::/56", "multicast"]),
    ("cluster-v6-mapped", {"cluster_cidr": ["10.244.0.0/16", "::ffff:0:0/104"], "backend": "vxlan"}, None, None,
     ["flatnet_cluster_cidr ::ffff:0.0.0.0/104", "IPv4-mapped"]),
    ("cluster-v6-loopback", {"cluster_cidr": ["10.244.0.0/16", "::1/128"], "backend": "vxlan"}, None, None,
     ["flatnet_cluster_cidr ::1/128", "loopback"]),
    ("cluster-v6-unspecified", {"cluster_cidr": ["10.244.0.0/16", "::/56"], "backend": "vxlan"}, None, None,
     ["flatnet_cluster_cidr ::/56", "unspecified"]),
    ("cluster-host-bits", {"cluster_cidr": "10.244.0.1/16"}, None, None,
     ["flatnet_cluster_cidr 10.244.0.1/16 is a host address", "did you mean 10.244.0.0/16?"]),
    ("cluster-not-a-cidr", {"cluster_cidr": "10.244.0.0"}, None, None, ["flatnet_cluster_cidr '10.244.0.0'"]),
    ("cluster-mapping", {"cluster_cidr": {"v4": "10.244.0.0/16"}}, None, None, ["flatnet_cluster_cidr {'v4'"]),
    ("service-loopback", {"service_cidr": "127.0.0.0/16"}, None, None,
     ["flatnet_service_cidr 127.0.0.0/16", "loopback"]),
    ("service-host-bits", {"service_cidr": "10.96.0.1/12"}, None, None,
     ["flatnet_service_cidr 10.96.0.1/12", "did you mean 10.96.0.0/12?"]),
    ("reserved-multicast", {"reserved_cidrs": ["224.0.0.0/4"]}, None, None,
     ["flatnet_reserved_cidrs entry 224.0.0.0/4", "multicast"]),
    ("reserved-not-a-list", {"reserved_cidrs": "172.16.0.0/12"}, None, None,
     ["flatnet_reserved_cidrs '172.16.0.0/12' is not a list"]),
    ("pin-loopback", {}, {"node1": {"pod_cidr": "127.0.0.0/24"}}, None,
     ["flatnet_pod_cidr of node1", "127.0.0.0/24", "loopback"]),
    ("pin-host-bits", {}, {"node1": {"pod_cidr": "10.244.5.1/24"}}, None,
     ["flatnet_pod_cidr of node1", "10.244.5.1/24", "did you mean 10.244.5.0/24?"]),
    ("pin-overlaps-other-pin", {}, {"node1": {"pod_cidr": "10.244.3.0/24"}, "node2": {"pod_cidr": "10.244.3.0/24"}},
     None, ["10.244.3.0/24 is wanted by node2", "but node1 already has it"]),
    ("pin-wider-overlaps-other", {}, {"node1": {"pod_cidr": "10.244.0.0/24"}, "node2": {"pod_cidr": "10.244.0.0/23"}},
     None, ["flatnet_pod_cidr 10.244.0.0/23 pinned for node2 is a /23 but flatnet_node_prefix is /24"]),
    ("pin-in-service-range", {}, {"node1": {"pod_cidr": "10.96.0.0/24"}}, None,
     ["flatnet_pod_cidr 10.96.0.0/24 pinned for node1 is outside flatnet_cluster_cidr 10.244.0.0/16"]),
    ("pin-in-underlay", {}, {"node1": {"pod_cidr": "192.168.50.0/24"}}, None,
     ["flatnet_pod_cidr 192.168.50.0/24 pinned for node1 is outside flatnet_cluster_cidr"]),
    ("pod-ip-network-address", {}, _pods({"name": "web", "ip": "10.244.0.0"}), None,
     ["flatnet_pods of node1: ip of pod web 10.244.0.0", "network"]),
    ("pod-ip-gateway", {}, _pods({"name": "web", "ip": "10.244.0.1"}), None,
     ["flatnet_pods of node1: ip of pod web 10.244.0.1", "gateway"]),
    ("pod-ip-broadcast", {}, _pods({"name": "web", "ip": "10.244.0.255"}), None,
     ["flatnet_pods of node1: ip of pod web 10.244.0.255", "broadcast"]),
    ("pod-ip-v6-gateway", {"cluster_cidr": ["10.244.0.0/16", "fd00:10:244::/56"], "backend": "vxlan"},
     _pods({"name": "web", "ip": "fd00:10:244::1"}), None, ["ip of pod web fd00:10:244::1", "gateway"]),
    # ------------------------------------------------------------------ pod keys
    ("pod-key-misspelt-command", {}, _pods({"name": "web", "comand": "sleep 1"}), None,
     ["pod web on node1 (flatnet_pods) has an unknown key 'comand' (did you mean command?)"]),
    ("pod-key-misspelt-ip", {}, _pods({"name": "web", "ips": "10.244.0.9"}), None,
     ["unknown key 'ips' (did you mean ip?)", "flatnet_pods"]),
    ("pod-key-unknown", {}, _pods({"name": "web", "annotations": {"app": "web"}}), None,
     ["pod web on node1 (flatnet_pods) has an unknown key 'annotations'"]),
    ("pod-entry-without-name", {}, _pods({"ip": "10.244.0.9"}), None,
     ["flatnet_pods of node1: entry {'ip': '10.244.0.9'} has no name"]),
    ("pod-entry-a-list", {}, _pods(["web"]), None, ["flatnet_pods of node1: entry ['web']"]),
    ("pods-a-string", {}, {"node1": {"pods": "web"}}, None, ["flatnet_pods of node1 'web' is not a list"]),
    ("pods-a-mapping", {}, {"node1": {"pods": {"name": "web"}}}, None, ["flatnet_pods of node1 {'name': 'web'}"]),
    # ------------------------------------------------------------------ commands
    ("command-unbalanced-quote", {}, _pods({"name": "web", "command": "sh -c 'echo hi"}), None,
     ["command of pod web on node1 (flatnet_pods) \"sh -c 'echo hi\" does not split", "No closing quotation"]),
    ("command-empty-string", {}, _pods({"name": "web", "command": ""}), None,
     ["command of pod web on node1 (flatnet_pods) '' is empty"]),
    ("command-blank-string", {}, _pods({"name": "web", "command": "   "}), None, ["'   ' is empty"]),
    ("command-empty-list", {}, _pods({"name": "web", "command": []}), None,
     ["command of pod web on node1 (flatnet_pods) [] is empty"]),
    ("command-nested-list", {}, _pods({"name": "web", "command": ["sleep", ["1"]]}), None,
     ["command of pod web on node1 (flatnet_pods): argument 1 ['1'] is a list"]),
    ("command-dict-item", {}, _pods({"name": "web", "command": ["sleep", {"s": 1}]}), None,
     ["argument 1 {'s': 1} is a mapping", "pod web"]),
    ("command-none-item", {}, _pods({"name": "web", "command": ["sleep", None]}), None,
     ["argument 1 None is a null", "pod web"]),
    ("command-float-item", {}, _pods({"name": "web", "command": ["sleep", 1.5]}), None,
     ["argument 1 1.5 is a float", "pod web"]),
    ("command-bool-item", {}, _pods({"name": "web", "command": ["sleep", True]}), None,
     ["argument 1 True is a bool", "pod web"]),
    ("command-nul-string", {}, _pods({"name": "web", "command": "sleep\x00 1"}), None,
     ["command of pod web on node1 (flatnet_pods) 'sleep\\x00 1' holds a NUL"]),
    ("command-nul-item", {}, _pods({"name": "web", "command": ["sleep", "1\x00"]}), None,
     ["argument 1 '1\\x00' holds a NUL", "pod web"]),
    ("command-a-number", {}, _pods({"name": "web", "command": 5}), None,
     ["command of pod web on node1 (flatnet_pods) 5 is neither a list of strings nor a string"]),
    ("command-empty-program", {}, _pods({"name": "web", "command": ["", "x"]}), None,
     ["pod web", "the program (argument 0) is an empty string"]),
    # ------------------------------------------------------------------ duplicates
    ("pod-on-two-nodes", {}, {"node1": {"pods": ["web"]}, "node3": {"pods": ["web"]}}, None,
     ["pod web is declared on both node1 (flatnet_pods) and node3 (flatnet_pods)"]),
    ("pod-clashes-with-generated", {}, {"node1": {"pods": ["node2-pod-1"]}, "node2": {"pods_per_node": 1}}, None,
     ["pod node2-pod-1 is declared on both node1 (flatnet_pods) and node2 (flatnet_pods_per_node)"]),
    ("pod-twice-on-a-node", {}, _pods("web", {"name": "web"}), None, ["pod web is listed twice on node1 (flatnet_pods)"]),
    ("pod-listed-and-generated", {}, {"node1": {"pods": ["node1-pod-1"], "pods_per_node": 1}}, None,
     ["pod node1-pod-1 is listed twice on node1: in flatnet_pods and made by flatnet_pods_per_node 1"]),
    # ------------------------------------------------------------------ booleans, backend
    ("masquerade-maybe", {"masquerade": "maybe"}, None, None, ["flatnet_masquerade 'maybe' is not a boolean"]),
    ("masquerade-two", {"masquerade": 2}, None, None, ["flatnet_masquerade 2 is not a boolean"]),
    ("prune-maybe", {}, {"node2": {"prune": "maybe"}}, None, ["flatnet_prune 'maybe' on node2 is not a boolean"]),
    ("firewall-word", {}, {"node1": {"firewall": "enabled"}}, None,
     ["flatnet_firewall 'enabled' on node1 is not a boolean"]),
    ("vxlan-guard-word", {}, {"node2": {"vxlan_guard": "strict"}}, None,
     ["flatnet_vxlan_guard 'strict' on node2 is not a boolean"]),
    ("vxlan-guard-two", {}, {"node1": {"vxlan_guard": 2}}, None,
     ["flatnet_vxlan_guard 2 on node1 is not a boolean"]),
    ("backend-unknown", {"backend": "flannel"}, None, None, ["flatnet_backend 'flannel' is not supported"]),
    ("backend-trailing-newline", {"backend": "vxlan\n"}, None, None, ["flatnet_backend 'vxlan\\n'"]),
]


@pytest.mark.parametrize("kw,mods,nodes,fragments", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_refused_naming_variable_and_value(kw, mods, nodes, fragments):
    with pytest.raises(PlanError) as err:
        plan(kw, mods, nodes() if nodes else None)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "flatnet_" in message or "pod " in message
    assert "\n" not in message.replace("\\n", "")  # one line: a bad value is shown escaped


def test_enough_cases():
    assert len(BAD) >= 45
    assert len({case[0] for case in BAD}) == len(BAD)


def test_pod_on_a_node_outside_the_play_counts():
    first = plan(mods={"node2": {"pods": ["web"]}})
    with pytest.raises(PlanError, match=r"pod web is declared on both node1 \(flatnet_pods\) and node2 "
                                        r"\(cached plan; node not in this play\)"):
        cluster_plan.build_plan({"node1": dict(_nodes()["node1"], pods=["web"])}, cached=first,
                                inventory_nodes=["node1", "node2"])


# ---------------------------------------------------------------------- right at the edges


def test_mtu_exactly_underlay_less_vxlan_passes():
    assert plan({"backend": "auto", "mtu": 1450}, nodes=_routed_nodes())["mtu"] == 1450


def test_mtu_exactly_underlay_passes_without_a_tunnel():
    assert plan({"mtu": 1500})["mtu"] == 1500
    assert plan({"mtu": 1400}, {"node3": {"underlay": {"mtu": 1400}}})["mtu"] == 1400


def test_mtu_v6_underlay_edge():
    assert plan({"backend": "vxlan", "mtu": 1430}, nodes=_v6_nodes())["mtu"] == 1430


def test_mtu_only_tunnelling_nodes_pay_the_overhead():
    # auto with node3 on another subnet: every node has a VXLAN peer, so 1450 for all;
    # with node3 at 9000 the limit is still set by node1/node2
    nodes = _routed_nodes()
    nodes["node3"]["underlay"]["mtu"] = 9000
    assert plan({"backend": "auto", "mtu": 1450}, nodes=nodes)["mtu"] == 1450


def test_mtu_computed_from_a_huge_underlay_is_capped():
    nodes = {"node1": _node("192.168.50.11", mtu=65536), "node2": _node("192.168.50.12", mtu=65536)}
    with pytest.raises(PlanError, match=r"pod MTU 65536 \(computed from the underlay MTU 65536\) is larger than 65535"):
        plan(nodes=nodes)
    assert plan({"mtu": 9000}, nodes=nodes)["mtu"] == 9000


def test_mtu_floor_edges():
    assert plan({"mtu": 576})["mtu"] == 576
    assert plan({"mtu": "1400"})["mtu"] == 1400  # -e flatnet_mtu=1400 gives a string


@pytest.mark.parametrize("port", [1, 4789, 65535, "8472"])
def test_ports_at_the_edges(port):
    assert plan({"vxlan": {"port": port}})["vxlan"]["port"] == int(port)


@pytest.mark.parametrize("vni", [1, 16777215])
def test_vni_at_the_edges(vni):
    assert plan({"vxlan": {"vni": vni}})["vxlan"]["vni"] == vni


@pytest.mark.parametrize("count,expected", [(0, []), ("2", ["node1-pod-1", "node1-pod-2"]), (None, [])])
def test_pods_per_node_counts(count, expected):
    got = plan({"pods_per_node": count})
    assert [p["name"] for p in got["nodes"]["node1"]["pods"]] == expected


def test_pods_per_node_per_node_wins_over_the_default():
    got = plan({"pods_per_node": 1}, {"node2": {"pods_per_node": 2}})
    assert [p["name"] for p in got["nodes"]["node1"]["pods"]] == ["node1-pod-1"]
    assert [p["name"] for p in got["nodes"]["node2"]["pods"]] == ["node2-pod-1", "node2-pod-2"]


@pytest.mark.parametrize("name", ["b" * 15, "br_pods-1.x", "cni0", "_x"])
def test_link_names_at_the_edges(name):
    assert plan({"bridge": name})["nodes"]["node1"]["bridge"] == name


def test_commands_kept_or_made_strings():
    got = plan(mods=_pods({"name": "a", "command": ["python3", "-m", "http.server", 8080]},
                          {"name": "b", "command": "sh -c 'echo \"hi there\"; sleep 60'"},
                          {"name": "c", "command": None}, "d"))
    commands = {p["name"]: p["command"] for p in got["nodes"]["node1"]["pods"]}
    assert commands == {"a": ["python3", "-m", "http.server", "8080"],
                        "b": "sh -c 'echo \"hi there\"; sleep 60'", "c": None, "d": None}


@pytest.mark.parametrize("cidr", ["223.255.0.0/16", "169.253.0.0/16", "1.0.0.0/16", "100.64.0.0/16",
                                  "172.16.0.0/16"])
def test_cluster_cidrs_next_to_unusable_ranges_pass(cidr):
    assert plan({"cluster_cidr": cidr})["cluster_cidrs"] == [cidr]


@pytest.mark.parametrize("v6,prefix", [("fd00:10:244::/56", 64), ("2001:db8::/56", 64), ("fe00::/56", 64),
                                       ("::2:0:0/104", 112), ("::10/124", 126)])
def test_v6_cluster_cidrs_next_to_unusable_ranges_pass(v6, prefix):
    got = plan({"cluster_cidr": ["10.244.0.0/16", v6], "backend": "vxlan", "node_prefix_v6": prefix})
    assert got["cluster_cidrs"][1] == v6


@pytest.mark.parametrize("ip", ["10.244.0.2", "10.244.0.254"])
def test_first_and_last_pod_addresses_pass(ip):
    got = plan(mods=_pods({"name": "web", "ip": ip}))
    assert got["nodes"]["node1"]["pods"][0]["ips"] == [f"{ip}/24"]


@pytest.mark.parametrize("text,value", [(True, True), ("no", False), ("on", True), (0, False)])
def test_boolean_spellings(text, value):
    assert plan({"masquerade": text}, {"node1": {"prune": text, "firewall": text, "vxlan_guard": text}})["masquerade"] is value


def test_same_pod_name_twice_across_separate_nodes_is_the_only_duplicate_rule():
    # node-local pod names that differ are fine even when they look alike
    got = plan(mods={"node1": {"pods": ["web-1"]}, "node2": {"pods": ["web-2"]}})
    assert [p["name"] for p in got["nodes"]["node2"]["pods"]] == ["web-2"]


@pytest.mark.parametrize("name", ["flatnet", "lab-1", "tva1f3", "A.b_c"])
def test_cluster_names_that_pass(name):
    assert plan_inputs.check_cluster_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "lab\n", "a b", "x" * 64, None])
def test_cluster_names_refused(name):
    with pytest.raises(PlanError, match=r"flatnet_cluster_name .* is not allowed"):
        plan_inputs.check_cluster_name(name)


@pytest.mark.parametrize("group,ok", [("flatnet_nodes", True), ("lab_nodes", True), ("all:!x", False),
                                      ("a,b", False), ("nodes\n", False), ("web*", False), ("", False)])
def test_group_names(group, ok):
    if ok:
        assert plan_inputs.check_group(group) == group
    else:
        with pytest.raises(PlanError, match=r"flatnet_group .* is not an inventory group name"):
            plan_inputs.check_group(group)
