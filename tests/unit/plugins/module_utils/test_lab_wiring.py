# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's wiring planners: from links, addresses and routes read, the batches per
namespace and the actions (pure, no root needed)."""

from __future__ import annotations

import ipaddress

from ansible_collections.flatnet.cluster.plugins.module_utils import lab_wiring
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_processes import kill_all
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_wiring import (
    link_addr_plan,
    node_port_plan,
    router_plan,
    veth_plan,
)

EAST = {"name": "east", "bridge": "br-east", "net": ipaddress.IPv4Network("192.168.50.0/24"),
        "gateway": ipaddress.IPv4Address("192.168.50.1")}
NODE = {"name": "node1", "link": "v-node1", "ip": ipaddress.IPv4Address("192.168.50.11"), "subnet": EAST}
WANTED = {"lo", "br-east", "v-node1"}


def batches(plan):
    return [(b.netns, b.net, b.lines) for b in plan.batches if b.lines]


def test_router_from_nothing():
    plan = router_plan("l-net", 1500, [EAST], WANTED, {}, {})
    assert plan.actions == ["create bridge br-east (192.168.50.0/24) in l-net", "add gateway 192.168.50.1/24 to br-east"]
    assert batches(plan) == [("l-net", None, [
        ["link", "add", "br-east", "mtu", 1500, "type", "bridge"],
        ["link", "set", "br-east", "mtu", 1500],
        ["link", "set", "br-east", "up"],
        ["addr", "add", "192.168.50.1/24", "dev", "br-east"],
    ])]


def test_router_in_sync_is_no_action():
    links = {"lo": {}, "br-east": {"mtu": 1500, "flags": ["UP"]}, "v-node1": {}}
    plan = router_plan("l-net", 1500, [EAST], WANTED, links, {"br-east": ["192.168.50.1/24"]})
    assert not plan.changed and batches(plan) == []


def test_router_repairs_and_removes_strangers():
    links = {"lo": {}, "br-east": {"mtu": 1400, "flags": []}, "stray": {}}
    plan = router_plan("l-net", 1500, [EAST], WANTED, links, {"br-east": ["10.9.9.9/8"]})
    assert plan.actions == ["delete link stray in l-net", "set mtu 1500 on br-east",
                            "remove address 10.9.9.9/8 from br-east", "add gateway 192.168.50.1/24 to br-east"]
    assert batches(plan)[0][2] == [
        ["link", "del", "stray"], ["link", "set", "br-east", "mtu", 1500], ["link", "set", "br-east", "up"],
        ["addr", "del", "10.9.9.9/8", "dev", "br-east"], ["addr", "add", "192.168.50.1/24", "dev", "br-east"],
    ]


ADD = ["link", "add", "v-node1", "type", "veth", "peer", "name", "eth0", "netns", 42]


def test_veth_whole_pair_is_kept():
    lab_end = {"ifindex": 7, "link_index": 2, "link_netnsid": 0}
    eth0 = {"ifindex": 2, "link_index": 7}
    plan = veth_plan("connect", "l-net", "v-node1", lab_end, eth0, {"net": "/proc/42/ns/net"}, ADD)
    assert not plan.changed and batches(plan) == []


def test_veth_half_pair_is_made_again_in_order():
    lab_end = {"ifindex": 7, "link_index": 3, "link_netnsid": 0}
    eth0 = {"ifindex": 2, "link_index": 9}
    plan = veth_plan("connect", "l-net", "v-node1", lab_end, eth0, {"net": "/proc/42/ns/net"}, ADD)
    assert plan.actions == ["connect"]
    assert batches(plan) == [("l-net", None, [["link", "del", "v-node1"]]),
                             (None, "/proc/42/ns/net", [["link", "del", "eth0"]]),
                             ("l-net", None, [ADD])]
    plan = veth_plan("connect", "l-net", "v-node1", None, None, {"netns": "l-out"}, ADD)
    assert batches(plan) == [("l-net", None, [ADD])]


def test_node_port_of_a_new_veth():
    plan = node_port_plan(NODE, "l-net", 1500, 42, {}, {}, [], [])
    assert plan.actions == ["add address 192.168.50.11/24 to eth0 of node node1",
                            "set default route via 192.168.50.1 on node node1"]
    assert batches(plan) == [
        ("l-net", None, [["link", "set", "v-node1", "master", "br-east"], ["link", "set", "v-node1", "up"]]),
        (None, "/proc/42/ns/net", [["link", "set", "eth0", "up"], ["addr", "add", "192.168.50.11/24", "dev", "eth0"],
                                   ["route", "replace", "default", "via", "192.168.50.1", "dev", "eth0"]]),
    ]


def test_node_port_in_sync_and_drifted():
    lab_end = {"mtu": 1500, "master": "br-east", "flags": ["UP"]}
    eth0 = {"mtu": 1500, "flags": ["UP"]}
    routes = [{"gateway": "192.168.50.1", "dev": "eth0"}]
    plan = node_port_plan(NODE, "l-net", 1500, 42, lab_end, eth0, ["192.168.50.11/24"], routes)
    assert not plan.changed and batches(plan) == []
    plan = node_port_plan(NODE, "l-net", 1500, 42, {"mtu": 1400, "flags": ["UP"]}, {"mtu": 1400, "flags": ["UP"]},
                          ["192.168.50.99/24"], routes)
    assert plan.actions == ["set mtu 1500 on v-node1", "attach v-node1 to br-east", "set mtu 1500 on eth0 of node node1",
                            "remove address 192.168.50.99/24 from eth0 of node node1",
                            "add address 192.168.50.11/24 to eth0 of node node1"]
    # The route is set again with the address (a new address can take it along), silently.
    assert batches(plan)[1][2][-1] == ["route", "replace", "default", "via", "192.168.50.1", "dev", "eth0"]


def test_outside_link_addresses():
    plan = link_addr_plan("l-out", "eth0", "203.0.113.10/24", "203.0.113.1", [], {}, [])
    assert plan.actions == ["add address 203.0.113.10/24 to eth0 in l-out", "set default route via 203.0.113.1 in l-out"]
    assert batches(plan) == [("l-out", None, [
        ["addr", "add", "203.0.113.10/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
        ["route", "replace", "default", "via", "203.0.113.1", "dev", "eth0"],
    ])]
    plan = link_addr_plan("l-net", "out0", "203.0.113.1/24", None, ["203.0.113.1/24"], {"flags": ["UP"]}, [])
    assert not plan.changed and batches(plan) == []


def test_node_net():
    assert lab_wiring.node_net(42) == "/proc/42/ns/net"


def test_kill_all_of_nothing_running():
    assert kill_all([]) is True
