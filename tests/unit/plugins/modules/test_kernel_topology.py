# SPDX-License-Identifier: GPL-3.0-or-later
"""The topology module against the real kernel, in a throwaway node (throwaway.py): a bridge, a
VXLAN device with a neighbour and an FDB entry, routes of protocol 157 and two pod namespaces,
one of them with eth0 down. The node and all it holds die with its init, even when a test fails."""

from __future__ import annotations

import os

import pytest

from ansible_collections.flatnet.cluster.tests.unit.plugins.modules.throwaway import (
    ThrowawayNode,
    kernel_tests_possible,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.names import veth_name

pytestmark = pytest.mark.skipif(not kernel_tests_possible(), reason="kernel tests need root, unshare and nsenter")


@pytest.fixture
def node():
    n = ThrowawayNode()
    try:
        pods = [f"{n.prefix}-a", f"{n.prefix}-b"]
        n.sh(["ip", "-batch", "-"], data=(
            "link add eth0 type veth peer name eth0p\nlink set eth0p up\nlink set eth0 up\n"
            "addr add 192.168.50.11/24 dev eth0\nroute add default via 192.168.50.1 dev eth0\n"
            "link add cni0 type bridge\nlink set cni0 alias flatnet\nlink set cni0 up\n"
            "addr add 10.244.0.1/24 dev cni0\n"
            "link add flatnet.1 type vxlan id 7 local 192.168.50.11 dev eth0 dstport 8472 nolearning\n"
            "link set flatnet.1 alias flatnet\nlink set flatnet.1 up\naddr add 10.244.0.0/32 dev flatnet.1\n"
            "neigh add 10.244.2.0 lladdr 0e:00:00:00:00:13 dev flatnet.1 nud permanent\n"
            "route add 10.244.1.0/24 via 192.168.50.12 dev eth0 proto 157\n"
            "route add 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink proto 157\n"))
        n.sh(["bridge", "fdb", "append", "0e:00:00:00:00:13", "dev", "flatnet.1", "dst", "192.168.60.11",
              "self", "permanent"])
        for i, pod in enumerate(pods):
            veth = veth_name(pod)
            n.ip("netns", "add", pod)
            n.ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod)
            n.ip("link", "set", veth, "alias", f"flatnet pod {pod}", "master", "cni0", "up")
            n.sh(["ip", "-n", pod, "-batch", "-"], data=(
                f"link set lo up\nlink set eth0 up\naddr add 10.244.0.{i + 2}/24 dev eth0\n"
                "route add default via 10.244.0.1 dev eth0\n"))
        n.ip("-n", pods[1], "link", "set", "eth0", "down")
        yield n, pods
    finally:
        n.close()


def test_reads_bridge_vxlan_routes_and_pods(node):
    n, pods = node
    ghost = pods[0][:-1] + "z"  # asked for, never made
    res = n.module("topology", {"pods": [ghost]}, check_mode=True)
    assert res["changed"] is False
    t = res["topology"]
    assert t["underlay"] == {"interface": "eth0", "exists": True, "addrs": ["192.168.50.11/24"], "mtu": 1500,
                             "up": True}
    assert t["bridge"]["addrs"] == ["10.244.0.1/24"] and t["bridge"]["ours"] and t["bridge"]["up"]
    vx = t["vxlan"]
    assert (vx["vni"], vx["port"], vx["local"], vx["addrs"]) == (7, 8472, "192.168.50.11", ["10.244.0.0/32"])
    assert vx["neigh"] == [{"ip": "10.244.2.0", "mac": "0e:00:00:00:00:13", "permanent": True}]
    assert {"mac": "0e:00:00:00:00:13", "dst": "192.168.60.11", "permanent": True} in vx["fdb"]
    ours = [(r["dst"], r["gateway"], r["dev"], r["onlink"]) for r in t["routes"] if r["protocol"] == "157"]
    assert ours == [("10.244.1.0/24", "192.168.50.12", "eth0", False),
                    ("10.244.2.0/24", "10.244.2.0", "flatnet.1", True)]
    by_name = {p["name"]: p for p in t["pods"]}
    assert sorted(by_name) == sorted(pods + [ghost])  # found by their veth alias, and the one asked for
    up, down = by_name[pods[0]], by_name[pods[1]]
    assert up["netns"] == "live" and up["eth0"]["up"] and up["eth0"]["carrier"]
    assert up["eth0"]["addrs"] == ["10.244.0.2/24"] and up["default_via"] == "10.244.0.1"
    assert up["veth"] == {"name": veth_name(pods[0]), "exists": True, "up": True, "master": "cni0"}
    assert down["eth0"]["exists"] and not down["eth0"]["up"] and down["eth0"]["addrs"] == ["10.244.0.3/24"]
    assert by_name[ghost]["netns"] == "missing" and not by_name[ghost]["eth0"]["exists"]


def test_a_missing_bridge_or_vxlan_device_is_reported_not_an_error(node):
    n, _pods = node
    n.ip("link", "del", "flatnet.1")
    t = n.module("topology", {"bridge": "br-none"})["topology"]
    assert t["bridge"]["exists"] is False
    assert t["vxlan"] == {"name": "flatnet.1", "exists": False}


def test_a_corrupt_pods_record_fails_naming_the_file(node):
    n, _pods = node
    n.sh(["sh", "-c", f"mkdir -p {n.state_dir} && printf '{{nope' > {n.state_dir}/pods.json"])
    res = n.module("topology", {}, expect_fail=True)
    assert os.path.join(n.state_dir, "pods.json") in res["msg"]
