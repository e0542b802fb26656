# SPDX-License-Identifier: GPL-3.0-or-later
"""The topology module against the real kernel: a throwaway node namespace with a bridge, a VXLAN
device with a neighbour and an FDB entry, routes of protocol 157 and two pod namespaces, one of
them with eth0 down. Everything made here carries a random prefix and is deleted, even when a
test fails."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

import ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 as _iproute2
from ansible_collections.flatnet.cluster.plugins.module_utils.names import veth_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_iproute2.__file__)))))))
MODULE = "ansible_collections.flatnet.cluster.plugins.modules.topology"


def sh(*argv, check=True, input=None):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input,
                          env=dict(os.environ, LC_ALL="C"), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed: {proc.stderr}{proc.stdout}")
    return proc


@pytest.fixture
def node():
    prefix = "t" + secrets.token_hex(3)
    ns, pods, state = f"{prefix}node", [f"{prefix}-a", f"{prefix}-b"], f"/run/{prefix}-state"
    made = []
    try:
        sh("ip", "netns", "add", ns)
        made.append(ns)
        sh("ip", "-n", ns, "-batch", "-", input=(
            "link set lo up\nlink add eth0 type veth peer name eth0p\nlink set eth0p up\nlink set eth0 up\naddr add 192.168.50.11/24 dev eth0\n"
            "route add default via 192.168.50.1 dev eth0\n"
            "link add cni0 type bridge\nlink set cni0 alias flatnet\nlink set cni0 up\n"
            "addr add 10.244.0.1/24 dev cni0\n"
            "link add flatnet.1 type vxlan id 7 local 192.168.50.11 dev eth0 dstport 8472 nolearning\n"
            "link set flatnet.1 alias flatnet\nlink set flatnet.1 up\naddr add 10.244.0.0/32 dev flatnet.1\n"
            "neigh add 10.244.2.0 lladdr 0e:00:00:00:00:13 dev flatnet.1 nud permanent\n"
            "route add 10.244.1.0/24 via 192.168.50.12 dev eth0 proto 157\n"
            "route add 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink proto 157\n"))
        sh("bridge", "-n", ns, "fdb", "append", "0e:00:00:00:00:13", "dev", "flatnet.1", "dst", "192.168.60.11",
           "self", "permanent")
        for i, pod in enumerate(pods):
            sh("ip", "netns", "add", pod)
            made.append(pod)
            veth = veth_name(pod)
            sh("ip", "-n", ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod)
            sh("ip", "-n", ns, "link", "set", veth, "alias", f"flatnet pod {pod}", "master", "cni0", "up")
            sh("ip", "-n", pod, "-batch", "-", input=(
                f"link set lo up\nlink set eth0 up\naddr add 10.244.0.{i + 2}/24 dev eth0\n"
                "route add default via 10.244.0.1 dev eth0\n"))
        sh("ip", "-n", pods[1], "link", "set", "eth0", "down")
        yield ns, pods, state
    finally:
        for name in reversed(made):
            sh("ip", "netns", "del", name, check=False)
        sh("rm", "-rf", state, check=False)


def run(ns, **args):
    args["_ansible_check_mode"] = True
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", MODULE],
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=COLLECTION_ROOT, LC_ALL="C"), check=False)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"module output is not JSON: {proc.stdout}{proc.stderr}") from None


def test_reads_bridge_vxlan_routes_and_pods(node):
    ns, pods, state = node
    ghost = pods[0][:-1] + "z"  # asked for, never made
    res = run(ns, pods=[ghost], state_dir=state)
    assert not res.get("failed") and res["changed"] is False, res
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
    ns, _pods, state = node
    sh("ip", "-n", ns, "link", "del", "flatnet.1")
    res = run(ns, bridge="br-none", state_dir=state)
    assert not res.get("failed"), res
    assert res["topology"]["bridge"]["exists"] is False
    assert res["topology"]["vxlan"] == {"name": "flatnet.1", "exists": False}


def test_a_corrupt_pods_record_fails_naming_the_file(node):
    ns, _pods, state = node
    os.makedirs(state)
    with open(os.path.join(state, "pods.json"), "w", encoding="utf-8") as f:
        f.write("{nope")
    res = run(ns, state_dir=state)
    assert res.get("failed") and "pods.json" in res["msg"]
