# SPDX-License-Identifier: GPL-3.0-or-later
"""The peers module against the real kernel: three throwaway nodes (named netns) on one underlay.

node1 reaches node2 by host-gw and node3 by VXLAN; node2 reaches both by host-gw. Each node has
a port-less bridge holding its pod gateway, and traffic is checked with ``ping -I gateway``.
Everything made here carries a random prefix and is deleted, even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

import ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 as _iproute2
from ansible_collections.flatnet.cluster.plugins.module_utils.peers_reconcile import peer_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_iproute2.__file__)))))))
MODULE = "ansible_collections.flatnet.cluster.plugins.modules.peers"

NODES = {
    "node1": {"ip": "192.168.50.11", "cidr": "10.244.0.0/24", "gw": "10.244.0.1", "vtep": "10.244.0.0",
              "mac": "0e:00:00:00:00:11"},
    "node2": {"ip": "192.168.50.12", "cidr": "10.244.1.0/24", "gw": "10.244.1.1", "vtep": "10.244.1.0",
              "mac": "0e:00:00:00:00:12"},
    "node3": {"ip": "192.168.50.13", "cidr": "10.244.2.0/24", "gw": "10.244.2.1", "vtep": "10.244.2.0",
              "mac": "0e:00:00:00:00:13"},
}
# A declared vxlan peer that has no node behind it: nothing is ever sent to it.
GHOST = {"name": "ghost", "mode": "vxlan", "underlay_ip": "192.168.50.14", "pod_cidrs": ["10.244.3.0/24"],
         "vtep_ips": ["10.244.3.0"], "vtep_mac": "0e:00:00:00:00:14"}


def sh(*argv, check=True, input=None):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input,
                          env=dict(os.environ, LC_ALL="C"), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed: {proc.stderr}{proc.stdout}")
    return proc


def peer(name, mode):
    n = NODES[name]
    return {"name": name, "mode": mode, "underlay_ip": n["ip"], "pod_cidrs": [n["cidr"]],
            "vtep_ips": [n["vtep"]], "vtep_mac": n["mac"]}


class Lab:
    def __init__(self):
        self.prefix = "t" + secrets.token_hex(3)
        self.lab = self.prefix + "lab"
        self.ns = {name: f"{self.prefix}{name[-1]}" for name in NODES}
        self.state_dir = f"/run/{self.prefix}-state"

    def build(self):
        sh("ip", "netns", "add", self.lab)
        sh("ip", "-n", self.lab, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.lab, "link", "set", "br0", "up")
        for name, node in NODES.items():
            ns = self.ns[name]
            sh("ip", "netns", "add", ns)
            port = f"{self.prefix}e{name[-1]}"
            sh("ip", "-n", self.lab, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.lab, "link", "set", port, "master", "br0", "up")
            batch = (
                "link set lo up\nlink set eth0 up\n"
                f"addr add {node['ip']}/24 dev eth0\n"
                "link add cni0 type bridge\nlink set cni0 up\n"
                f"addr add {node['gw']}/24 dev cni0\n"
            )
            sh("ip", "-n", ns, "-batch", "-", input=batch)
            # Strict reverse-path filtering must not break either backend.
            for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=1",
                        "net.ipv4.conf.default.rp_filter=1"):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", key)

    def destroy(self):
        for ns in list(self.ns.values()) + [self.lab]:
            sh("ip", "netns", "del", ns, check=False)
        sh("rm", "-rf", self.state_dir, check=False)

    def run(self, name, check_mode=False, diff=False, **args):
        args.setdefault("state_dir", self.state_dir + "/" + name)
        args["_ansible_check_mode"] = check_mode
        args["_ansible_diff"] = diff
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns[name], sys.executable, "-m", MODULE],
            input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=COLLECTION_ROOT, LC_ALL="C"), check=False,
        )
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"module output is not JSON: {proc.stdout}{proc.stderr}") from None

    def ip_json(self, name, *argv):
        out = sh("ip", "-n", self.ns[name], "-json", *argv).stdout.strip()
        return json.loads(out) if out else []

    def our_routes(self, name):
        return sorted(r["dst"] for r in self.ip_json(name, "route", "show", "proto", "157"))

    def ping(self, name, src, dst):
        return sh("ip", "netns", "exec", self.ns[name], "ping", "-c", "1", "-W", "1", "-I", src, dst,
                  check=False).returncode == 0

    def fdb(self, name, dev="flatnet.1"):
        out = sh("bridge", "-n", self.ns[name], "-json", "fdb", "show", "dev", dev).stdout.strip()
        return sorted((f["mac"], f.get("dst")) for f in json.loads(out or "[]") if f.get("dst"))


def node_args(name, peers, **vxlan):
    node = NODES[name]
    vx = {"local_ip": node["ip"], "mac": node["mac"], "addresses": [node["vtep"] + "/32"], "mtu": 1450}
    vx.update(vxlan)
    return {"underlay_interface": "eth0", "peers": peers, "vxlan": vx}


PLAN = {
    "node1": [peer("node2", "direct"), peer("node3", "vxlan")],
    "node2": [peer("node1", "direct"), peer("node3", "direct")],
    "node3": [peer("node1", "vxlan"), peer("node2", "direct")],
}


@pytest.fixture
def lab():
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def converge(lab, name, peers, **vxlan):
    """Check mode, real, again: the three-run contract of every state-changing task."""
    before = (lab.our_routes(name), lab.ip_json(name, "link", "show"))
    res = lab.run(name, check_mode=True, **node_args(name, peers, **vxlan))
    assert not res.get("failed"), res
    assert res["changed"] is True
    assert (lab.our_routes(name), lab.ip_json(name, "link", "show")) == before, "check mode changed the kernel"
    res = lab.run(name, **node_args(name, peers, **vxlan))
    assert not res.get("failed"), res
    assert res["changed"] is True
    again = lab.run(name, **node_args(name, peers, **vxlan))
    assert again["changed"] is False, again["actions"]
    assert again["actions"] == []
    return res


def test_host_gw_and_vxlan_traffic_drift_and_teardown(lab):
    # A foreign route (not proto 157) must survive everything the module does.
    sh("ip", "-n", lab.ns["node1"], "route", "add", "10.99.0.0/24", "via", "192.168.50.12", "proto", "static")

    for name, peers in PLAN.items():
        peers = peers + [GHOST] if name == "node1" else peers
        res = converge(lab, name, peers)
        assert any(a.startswith("add route") for a in res["actions"]), res["actions"]

    res1 = lab.run("node1", **node_args("node1", PLAN["node1"] + [GHOST]))
    assert res1["changed"] is False
    # Unchanged: the counts, not the per-peer list (issue 16: a small result at 1,000 peers).
    assert "peers" not in res1 and res1["counts"] == {"peers": 3, "direct": 1, "vxlan": 2, "routes": 3}
    # The same peers as peer lines (what the backend role passes) change nothing either.
    lines = [peer_line(p) for p in PLAN["node1"] + [GHOST]]
    as_lines = lab.run("node1", **node_args("node1", lines))
    assert as_lines["changed"] is False and as_lines["actions"] == [] and as_lines["counts"] == res1["counts"]
    res1 = lab.run("node1", check_mode=True, diff=True, **node_args("node1", PLAN["node1"] + [GHOST]))
    assert res1["changed"] is False and res1["diff"]["before"] == res1["diff"]["after"]
    assert {p["name"]: p["routes"] for p in res1["peers"]} == {
        "ghost": ["10.244.3.0/24 via 10.244.3.0 dev flatnet.1 onlink"],
        "node2": ["10.244.1.0/24 via 192.168.50.12 dev eth0"],
        "node3": ["10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink"],
    }
    link = lab.ip_json("node1", "-details", "link", "show", "dev", "flatnet.1")[0]
    assert link["ifalias"] == "flatnet" and link["mtu"] == 1450 and link["address"] == "0e:00:00:00:00:11"
    assert link["linkinfo"]["info_data"]["learning"] is False
    assert "flatnet.1" not in {x["ifname"] for x in lab.ip_json("node2", "link", "show")}

    # Traffic between pod gateways: host-gw both ways, VXLAN both ways, host-gw node2 <-> node3.
    assert lab.ping("node1", "10.244.0.1", "10.244.1.1")
    assert lab.ping("node1", "10.244.0.1", "10.244.2.1")
    assert lab.ping("node3", "10.244.2.1", "10.244.0.1")
    assert lab.ping("node2", "10.244.1.1", "10.244.2.1")

    # Drift: route, neighbour and FDB entry deleted by hand → reported in check mode, then repaired.
    ns1 = lab.ns["node1"]
    sh("ip", "-n", ns1, "route", "del", "10.244.2.0/24")
    sh("ip", "-n", ns1, "neigh", "del", "10.244.2.0", "dev", "flatnet.1")
    sh("bridge", "-n", ns1, "fdb", "del", "0e:00:00:00:00:13", "dev", "flatnet.1", "dst", "192.168.50.13", "self")
    assert not lab.ping("node1", "10.244.0.1", "10.244.2.1")
    res = lab.run("node1", check_mode=True, diff=True, **node_args("node1", PLAN["node1"] + [GHOST]))
    assert res["changed"] is True
    assert res["actions"] == [
        "add neighbour 10.244.2.0 lladdr 0e:00:00:00:00:13 dev flatnet.1",
        "add fdb 0e:00:00:00:00:13 dst 192.168.50.13 dev flatnet.1",
        "add route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink",
    ]
    assert "route 10.244.2.0/24" not in res["diff"]["before"]
    assert "route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink" in res["diff"]["after"]
    assert "10.244.2.0/24" not in lab.our_routes("node1")
    res = lab.run("node1", **node_args("node1", PLAN["node1"] + [GHOST]))
    assert res["changed"] is True
    assert lab.run("node1", **node_args("node1", PLAN["node1"] + [GHOST]))["changed"] is False
    assert lab.ping("node1", "10.244.0.1", "10.244.2.1")

    # A wrong neighbour entry and a wrong direct route are replaced.
    sh("ip", "-n", ns1, "neigh", "replace", "10.244.2.0", "lladdr", "0e:00:00:00:00:99", "dev", "flatnet.1",
       "nud", "permanent")
    sh("ip", "-n", ns1, "route", "replace", "10.244.1.0/24", "via", "192.168.50.13", "dev", "eth0", "proto", "157")
    res = lab.run("node1", **node_args("node1", PLAN["node1"] + [GHOST]))
    assert res["actions"] == [
        "replace neighbour 10.244.2.0 lladdr 0e:00:00:00:00:13 dev flatnet.1",
        "replace route 10.244.1.0/24 via 192.168.50.13 dev eth0 with 10.244.1.0/24 via 192.168.50.12 dev eth0",
    ]
    assert lab.ping("node1", "10.244.0.1", "10.244.2.1") and lab.ping("node1", "10.244.0.1", "10.244.1.1")

    # In-place fix of the MTU; recreation when the VNI differs on both ends.
    res = converge(lab, "node1", PLAN["node1"] + [GHOST], mtu=1400)
    assert res["actions"] == ["set flatnet.1 mtu 1400"]
    res = converge(lab, "node1", PLAN["node1"] + [GHOST], mtu=1400, vni=7)
    assert res["actions"][0].startswith("recreate vxlan device flatnet.1 (vni 1 -> 7)"), res["actions"]
    assert "add route 10.244.2.0/24 via 10.244.2.0 dev flatnet.1 onlink" in res["actions"]
    assert not lab.ping("node1", "10.244.0.1", "10.244.2.1")  # node3 still speaks VNI 1
    converge(lab, "node3", PLAN["node3"], vni=7)
    assert lab.ping("node1", "10.244.0.1", "10.244.2.1")

    # A removed peer: its route, neighbour and FDB entry go; the device stays for node3.
    res = converge(lab, "node1", PLAN["node1"], mtu=1400, vni=7)
    assert res["actions"] == [
        "delete route 10.244.3.0/24 via 10.244.3.0 dev flatnet.1 onlink",
        "delete neighbour 10.244.3.0 dev flatnet.1",
        "delete fdb 0e:00:00:00:00:14 dst 192.168.50.14 dev flatnet.1",
    ]
    assert lab.fdb("node1") == [("0e:00:00:00:00:13", "192.168.50.13")]
    assert [n["dst"] for n in lab.ip_json("node1", "neigh", "show", "dev", "flatnet.1")] == ["10.244.2.0"]

    # No vxlan peer left: the device goes, and the kernel takes its routes and entries with it.
    res = converge(lab, "node1", [peer("node2", "direct")])
    assert res["actions"] == ["delete vxlan device flatnet.1"]
    assert "flatnet.1" not in {x["ifname"] for x in lab.ip_json("node1", "link", "show")}
    assert lab.our_routes("node1") == ["10.244.1.0/24"]

    # Teardown: every proto-157 route goes, the foreign route stays.
    res = lab.run("node1", check_mode=True, state="absent", state_dir=lab.state_dir + "/node1")
    assert res["changed"] is True and lab.our_routes("node1") == ["10.244.1.0/24"]
    assert lab.run("node1", state="absent", state_dir=lab.state_dir + "/node1")["changed"] is True
    assert lab.run("node1", state="absent", state_dir=lab.state_dir + "/node1")["changed"] is False
    assert lab.our_routes("node1") == []
    assert not os.path.exists(lab.state_dir + "/node1/peers.json")
    routes = lab.ip_json("node1", "route", "show", "10.99.0.0/24")
    assert routes and routes[0]["protocol"] == "static"


def test_absent_removes_vxlan_device_and_keeps_foreign_device(lab):
    converge(lab, "node3", PLAN["node3"])
    assert lab.run("node3", state="absent")["actions"] == [
        "delete route 10.244.0.0/24 via 10.244.0.0 dev flatnet.1 onlink",
        "delete route 10.244.1.0/24 via 192.168.50.12 dev eth0",
        "delete vxlan device flatnet.1",
    ]
    # A link of that name that is not ours is never deleted, and never adopted.
    sh("ip", "-n", lab.ns["node3"], "link", "add", "flatnet.1", "type", "bridge")
    assert lab.run("node3", state="absent")["changed"] is False
    res = lab.run("node3", **node_args("node3", PLAN["node3"]))
    assert res["failed"] and "not flatnet's" in res["msg"]
    assert "flatnet.1" in {x["ifname"] for x in lab.ip_json("node3", "link", "show")}


def test_direct_peer_off_link_fails_before_any_change(lab):
    far = {"name": "far", "mode": "direct", "underlay_ip": "192.168.60.5", "pod_cidrs": ["10.244.9.0/24"]}
    res = lab.run("node1", **node_args("node1", [peer("node2", "direct"), far]))
    assert res["failed"] is True
    assert "far (192.168.60.5)" in res["msg"] and "vxlan or auto" in res["msg"]
    assert lab.our_routes("node1") == []


def test_foreign_route_to_a_peer_cidr_is_refused(lab):
    sh("ip", "-n", lab.ns["node2"], "route", "add", "10.244.0.0/24", "via", "192.168.50.13", "proto", "static")
    res = lab.run("node2", **node_args("node2", PLAN["node2"]))
    assert res["failed"] is True and "10.244.0.0/24 (proto static)" in res["msg"]
    routes = lab.ip_json("node2", "route", "show", "10.244.0.0/24")
    assert routes[0]["gateway"] == "192.168.50.13" and routes[0]["protocol"] == "static"
