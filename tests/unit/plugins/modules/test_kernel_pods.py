# SPDX-License-Identifier: GPL-3.0-or-later
"""The node, pods and node_facts modules against a real kernel, inside a throwaway node.

A node is `unshare --net --mount --pid` with a tmpfs on /run (so /run/netns is private);
the modules run in it through nsenter, exactly as Ansible would run them (JSON args on
stdin). Killing the node's init frees everything made inside. Needs root.
"""

from __future__ import annotations

import json
import time

import pytest

from ansible_collections.flatnet.cluster.tests.unit.plugins.modules.throwaway import (
    ThrowawayNode,
    kernel_tests_possible,
)
import ansible_collections.flatnet.cluster.plugins.modules.pods as pods_module
from ansible_collections.flatnet.cluster.plugins.module_utils.names import bridge_mac, veth_name

pods_mac = pods_module.pod_mac

pytestmark = pytest.mark.skipif(
    not kernel_tests_possible(),
    reason="kernel tests need root, unshare and nsenter",
)


class Node(ThrowawayNode):
    def __init__(self):
        super().__init__()
        self.bridge = f"{self.prefix}br"

    def pods_record(self):
        res = self.sh(["cat", f"{self.state_dir}/pods.json"], check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def running(self, pid):
        """Alive and not a zombie (the node's init, a plain sleep, never reaps)."""
        res = self.sh(["cat", f"/proc/{pid}/stat"], check=False)
        return res.returncode == 0 and res.stdout.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

    def ping(self, pod, addr):
        return self.sh(["ip", "netns", "exec", pod, "ping", "-c1", "-w8", addr], check=False).returncode == 0


@pytest.fixture
def node():
    n = Node()
    try:
        yield n
    finally:
        n.close()


def three_runs(node, name, args, check_applied):
    """check mode (changed, nothing applied), real (changed), again (not changed)."""
    r = node.module(name, args, check_mode=True)
    assert r["changed"] and r["actions"], r
    assert not check_applied(), "check mode changed the node"
    r = node.module(name, args)
    assert r["changed"], r
    assert check_applied()
    r2 = node.module(name, args)
    assert not r2["changed"] and r2["actions"] == [], r2
    return r, r2


def node_args(node, **kw):
    return dict(dict(bridge=node.bridge, addresses=["10.77.0.1/24", "fd00:77::1/64"], mtu=1400,
                     pod_cidrs=["10.77.0.0/24", "fd00:77::/64"]), **kw)


def pod_args(node, pods, **kw):
    return dict(dict(bridge=node.bridge, mtu=1400, gateways=["10.77.0.1", "fd00:77::1"], pods=pods), **kw)


def mk_pods(node, n, command_for=()):
    return [
        {"name": f"{node.prefix}-p{i}", "ips": [f"10.77.0.{i + 2}/24", f"fd00:77::{i + 2:x}/64"],
         "command": ["sleep", "600"] if i in command_for else None}
        for i in range(n)
    ]


def test_node_module_three_runs_drift_and_absent(node):
    node.sh(["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])
    args = node_args(node)

    def applied():
        return node.bridge in node.ip("-br", "link")

    three_runs(node, "node", args, applied)
    link = node.ipj("-details", "link", "show", node.bridge)[0]
    assert link["ifalias"] == "flatnet" and link["mtu"] == 1400 and "UP" in link["flags"]
    assert node.sh(["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                    "net.ipv4.conf.all.rp_filter", f"net.ipv6.conf.{node.bridge}.accept_ra"]).stdout.split() \
        == ["1", "1", "2", "0"]

    # drift: bridge down, a foreign extra address, wrong MTU
    node.ip("link", "set", node.bridge, "down", "mtu", "1500")
    node.ip("addr", "add", "10.99.0.1/24", "dev", node.bridge)
    r = node.module("node", args, check_mode=True)
    assert r["changed"] and "10.99.0.1/24" in r["diff"]["before"] and "down" in r["diff"]["before"]
    assert "UP" not in node.ipj("link", "show", node.bridge)[0]["flags"]
    assert node.module("node", args)["changed"]
    assert not node.module("node", args)["changed"]
    link = node.ipj("addr", "show", node.bridge)[0]
    assert "UP" in link["flags"] and link["mtu"] == 1400
    assert "10.99.0.1" not in json.dumps(link)

    # absent restores the sysctls and deletes only our bridge
    r = node.module("node", dict(args, state="absent"))
    assert r["changed"]
    assert node.bridge not in node.ip("-br", "link")
    assert node.sh(["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"]).stdout.split() == ["0", "1"]
    assert not node.module("node", dict(args, state="absent"))["changed"]


def test_node_refuses_foreign_bridge_with_other_address(node):
    node.ip("link", "add", node.bridge, "type", "bridge")
    node.ip("addr", "add", "10.88.0.1/16", "dev", node.bridge)
    r = node.module("node", node_args(node), expect_fail=True)
    assert "already has an IP address different from" in r["msg"] and "flatnet_bridge" in r["msg"]
    r = node.module("node", node_args(node, state="absent"))
    assert node.bridge in node.ip("-br", "link"), "a foreign bridge was deleted"


def test_node_facts_in_a_node(node):
    node.ip("link", "add", f"{node.prefix}u0", "type", "veth", "peer", "name", f"{node.prefix}u1")
    node.ip("addr", "add", "192.168.77.5/24", "dev", f"{node.prefix}u0")
    node.ip("link", "set", f"{node.prefix}u0", "up")
    node.ip("link", "set", f"{node.prefix}u1", "up")
    r = node.module("node_facts", {}, expect_fail=True)
    assert "flatnet_underlay_interface" in r["msg"]
    node.ip("route", "add", "default", "via", "192.168.77.1")
    r = node.module("node_facts", {})
    facts = r["ansible_facts"]["flatnet_node"]
    assert facts["underlay"]["interface"] == f"{node.prefix}u0"
    assert facts["underlay"]["network"] == "192.168.77.0/24"
    assert facts["recorded"] == {}
    assert r["changed"] is False
    node.module("node", node_args(node))
    node.module("pods", pod_args(node, mk_pods(node, 1)))
    facts = node.module("node_facts", {"underlay_ip": "192.168.77.5"})["ansible_facts"]["flatnet_node"]
    assert facts["underlay"]["chosen_by"] == "ip"
    assert facts["recorded"] == {"pod_cidrs": ["10.77.0.0/24", "fd00:77::/64"],
                                 "pods": {f"{node.prefix}-p0": ["10.77.0.2", "fd00:77::2"]}}


def test_pods_three_runs_drift_prune_and_absent(node):
    node.module("node", node_args(node))
    pods = mk_pods(node, 4, command_for=(0, 3))
    names = [p["name"] for p in pods]
    args = pod_args(node, pods)
    three_runs(node, "pods", args, lambda: node.netns() == names)
    assert node.ping(names[1], "10.77.0.4") and node.ping(names[1], "fd00:77::5")
    assert node.ping(names[2], "10.77.0.1")
    rec = node.pods_record()["pods"]
    pid0 = rec[names[0]]["pid"]
    assert pid0 and node.running(pid0)

    def repaired(what):
        r = node.module("pods", args, check_mode=True)
        assert r["changed"], (what, r)
        assert r["diff"]["before"] != r["diff"]["after"], what
        assert node.module("pods", args)["changed"], what
        again = node.module("pods", args)
        assert not again["changed"], (what, again)
        for name, addr in ((names[1], "10.77.0.2"), (names[0], "10.77.0.5"), (names[3], "fd00:77::3")):
            assert node.ping(name, addr), (what, name, addr)
        return r

    # static neighbour entries both ways, so nobody ARPs on the pod network
    mac = node.ipj("link", "show", node.bridge)[0]["address"]
    assert mac == bridge_mac(node.bridge, ["10.77.0.1/24"])

    def static_neighbours():
        pod_side = {name: sorted((n["dst"], n["lladdr"]) for n in node.ipj(
            "-n", name, "neigh", "show", "nud", "permanent")) for name in names}
        bridge_side = sorted((n["dst"], n["lladdr"]) for n in node.ipj(
            "neigh", "show", "dev", node.bridge, "nud", "permanent"))
        return pod_side, bridge_side

    # each pod: its gateways and every other pod of the node (same-node pod <-> pod)
    assert static_neighbours() == (
        {name: sorted([("10.77.0.1", mac), ("fd00:77::1", mac)]
                      + [(ip.split("/")[0], pods_mac(p["name"])) for p in pods if p["name"] != name
                         for ip in p["ips"]]) for name in names},
        sorted((ip.split("/")[0], pods_mac(p["name"])) for p in pods for ip in p["ips"]))
    learned = [n for n in node.ipj("neigh", "show", "dev", node.bridge)
               if "PERMANENT" not in n.get("state", []) and n["dst"].startswith(("10.77.", "fd00:77:"))]
    assert learned == [], f"the node learned pod neighbours by ARP/ND: {learned}"
    learned = {name: [n["dst"] for n in node.ipj("-n", name, "neigh", "show")
                      if "PERMANENT" not in n.get("state", []) and not n["dst"].startswith("fe80:")]
               for name in names}
    assert learned == {name: [] for name in names}, f"pods learned neighbours by ARP/ND: {learned}"

    # a deleted pod <-> pod entry
    node.ip("-n", names[2], "neigh", "del", "10.77.0.2", "dev", "eth0")
    r = repaired("deleted pod neighbour")
    assert r["actions"] == [f"{names[2]}: set static neighbour 10.77.0.2 lladdr {pods_mac(names[0])} "
                            f"(pod {names[0]})"], r["actions"]

    # deleted static neighbour entries
    node.ip("-n", names[0], "neigh", "del", "10.77.0.1", "dev", "eth0")
    node.ip("neigh", "del", "fd00:77::3", "dev", node.bridge)
    r = repaired("deleted static neighbours")
    assert f"{names[0]}: set static neighbour 10.77.0.1 lladdr {mac}" in r["actions"]
    assert f"{names[1]}: set static neighbour fd00:77::3 lladdr {pods_mac(names[1])} on {node.bridge}" \
        in r["actions"]

    # a bridge MAC changed by hand (which also flushes the bridge's neighbour entries)
    node.ip("link", "set", node.bridge, "address", "02:00:00:00:77:01")
    assert node.module("node", node_args(node))["changed"]
    r = repaired("bridge MAC changed")
    assert static_neighbours()[1] == sorted(
        (ip.split("/")[0], pods_mac(p["name"])) for p in pods for ip in p["ips"])

    # a deleted veth
    node.ip("link", "del", veth_name(names[1]))
    r = repaired("deleted veth")
    assert f"{names[1]}: add veth {veth_name(names[1])}" in r["actions"]

    # a pod address changed
    node.ip("-n", names[2], "addr", "del", "10.77.0.4/24", "dev", "eth0")
    node.ip("-n", names[2], "addr", "add", "10.77.0.99/24", "dev", "eth0")
    r = repaired("changed address")
    assert "10.77.0.99/24" in r["diff"]["before"]
    assert node.ping(names[2], "10.77.0.1")

    # veth out of the bridge, down; bridge down
    node.ip("link", "set", veth_name(names[3]), "nomaster")
    node.ip("link", "set", veth_name(names[2]), "down")
    r = repaired("veth out of bridge / down")
    assert any("attach" in a for a in r["actions"]) and any(" up" in a for a in r["actions"])

    # a killed workload
    node.sh(["kill", "-KILL", str(pid0)])
    r = repaired("killed workload")
    assert any("start workload" in a and "was dead" in a for a in r["actions"]), r["actions"]
    assert node.pods_record()["pods"][names[0]]["pid"] != pid0

    # a pod netns removed by hand while its workload keeps the old namespace (and veth) alive
    old_pid = node.pods_record()["pods"][names[3]]["pid"]
    node.ip("netns", "del", names[3])
    r = repaired("netns removed by hand")
    assert f"{names[3]}: recreate missing netns" in r["actions"]
    assert not node.running(old_pid), "old workload left running"

    # interrupted run: a recorded netns without veth, and a dead /run/netns file for a new pod
    node.ip("link", "del", veth_name(names[1]))
    extra = {"name": f"{node.prefix}-p9", "ips": ["10.77.0.50/24"], "command": None}
    node.sh(["touch", f"/run/netns/{extra['name']}"])
    args = pod_args(node, pods + [extra])
    r = repaired("interrupted run")
    assert node.ping(extra["name"], "10.77.0.3")

    # a foreign netns with a declared pod name is refused and left alone
    foreign = f"{node.prefix}-foreign"
    node.ip("netns", "add", foreign)
    r = node.module("pods", pod_args(node, pods + [{"name": foreign, "ips": ["10.77.0.60/24"]}]),
                    expect_fail=True)
    assert "not made by flatnet.cluster" in r["msg"]
    assert foreign in node.netns()

    # prune: drop two pods (one with a workload)
    pid3 = node.pods_record()["pods"][names[3]]["pid"]
    args = pod_args(node, pods[:2])
    r = node.module("pods", args, check_mode=True)
    assert r["changed"] and f"remove pod {names[3]}" in r["actions"] and names[3] in node.netns()
    r = node.module("pods", args)
    assert sorted(node.netns()) == sorted(names[:2] + [foreign])
    assert veth_name(names[3]) not in node.ip("-br", "link")
    assert not node.running(pid3)
    assert not node.module("pods", args)["changed"]
    left = sorted(n["dst"] for n in node.ipj("-n", names[0], "neigh", "show", "nud", "permanent"))
    assert left == ["10.77.0.1", "10.77.0.3", "fd00:77::1", "fd00:77::3"], left

    # absent: every recorded pod goes, the foreign netns stays
    r = node.module("pods", {"state": "absent"})
    assert r["changed"] and node.netns() == [foreign]
    assert node.pods_record() is None
    assert not node.module("pods", {"state": "absent"})["changed"]
    assert "veth" not in node.ip("-br", "link")


def test_bridge_without_fixed_mac_falls_back_to_arp(node):
    # A bridge not made by the node module takes its lowest port's MAC, which changes as
    # pods come and go: the pods must not pin their gateway to it.
    node.ip("link", "add", node.bridge, "type", "bridge")
    node.ip("addr", "add", "10.77.0.1/24", "dev", node.bridge)
    node.ip("link", "set", node.bridge, "up")
    pods = [dict(p, ips=p["ips"][:1]) for p in mk_pods(node, 3)]
    args = pod_args(node, pods, gateways=["10.77.0.1"])
    first = node.module("pods", args)
    assert first["changed"] and "not the fixed" in json.dumps(first.get("warnings")), first
    assert node.ping(pods[0]["name"], "10.77.0.1") and node.ping(pods[2]["name"], "10.77.0.1")
    # no entry for the gateway; the other pods' entries do not depend on the bridge
    assert sorted(n["dst"] for n in node.ipj("-n", pods[0]["name"], "neigh", "show", "nud", "permanent")) == [
        "10.77.0.3", "10.77.0.4"]
    again = node.module("pods", args)
    assert not again["changed"], again
    assert len(node.ipj("neigh", "show", "dev", node.bridge, "nud", "permanent")) == 3


def test_hundred_pods_timing(node):
    node.module("node", node_args(node))
    pods = mk_pods(node, 100)
    args = pod_args(node, pods)
    first = node.module("pods", args, diff=False)
    assert first["changed"] and len(node.netns()) == 100
    again = node.module("pods", args, diff=False)
    assert not again["changed"]
    assert node.ping(pods[99]["name"], "10.77.0.2")
    absent = node.module("pods", {"state": "absent"}, diff=False)
    assert node.netns() == []
    print(f"\n100 pods: create {first['_elapsed']:.2f}s, unchanged {again['_elapsed']:.2f}s, "
          f"absent {absent['_elapsed']:.2f}s (module process wall time)")


def test_module_exits_while_workloads_keep_running(node):
    node.module("node", node_args(node))
    pods = [{"name": f"{node.prefix}-w", "ips": ["10.77.0.2/24"], "command": "sleep 600"}]
    r = node.module("pods", pod_args(node, pods))
    # captured pipes: run() only returns once nothing holds them, so the workload is detached
    assert r["_elapsed"] < 10
    pid = r["pods"][pods[0]["name"]]["pid"]
    assert node.running(pid)
    assert node.sh(["readlink", f"/proc/{pid}/ns/net"]).stdout != node.sh(["readlink", "/proc/self/ns/net"]).stdout
    for fd in node.sh(["ls", f"/proc/{pid}/fd"]).stdout.split():
        target = node.sh(["readlink", f"/proc/{pid}/fd/{fd}"], check=False).stdout.strip()
        assert not target.startswith("pipe:"), f"workload holds {target}"
    node.module("pods", {"state": "absent"})
    assert not node.running(pid)


# The four command shapes of issue 13: plain, a shell that forks its last command, a program
# that execs another, a shell that forks and waits. Each must stay exactly one process tree.
SHAPES = {
    "plain": (["sleep", "600"], 1),
    "bashc": (["bash", "-c", "sleep 600; true"], 2),
    "env": (["env", "A=1", "sleep", "600"], 1),
    "forkwait": (["sh", "-c", "sleep 600 & wait"], 2),
}


def netns_pids(node, pod):
    """Live processes in the pod's network namespace (``ip netns pids`` skips zombies)."""
    res = node.sh(["ip", "netns", "pids", pod], check=False)
    return sorted(int(p) for p in res.stdout.split()) if res.returncode == 0 else []


def sessions(node, pids):
    return {int(node.sh(["cat", f"/proc/{pid}/stat"]).stdout.rsplit(")", 1)[1].split()[3]) for pid in pids}


def test_workload_shapes_exactly_once(node):
    node.module("node", node_args(node))
    pods = [{"name": f"{node.prefix}-{shape}", "ips": [f"10.77.0.{i + 2}/24"], "command": argv}
            for i, (shape, (argv, _n)) in enumerate(sorted(SHAPES.items()))]
    want = {p["name"]: SHAPES[p["name"].rsplit("-", 1)[1]][1] for p in pods}
    args = pod_args(node, pods, gateways=["10.77.0.1"])
    r = node.module("pods", args)
    assert r["changed"]
    rec = node.pods_record()["pods"]
    trees = {}
    for name, count in want.items():
        pids = netns_pids(node, name)
        assert len(pids) == count, (name, pids)
        ident = rec[name]["workload"]
        assert ident["sid"] == rec[name]["pid"] and ident["start_time"] and ident["boot_id"] and ident["token"]
        assert sessions(node, pids) == {ident["sid"]}, name
        trees[name] = pids
    # two reruns: nothing starts again, whatever the command exec'd or forked
    for rerun in (1, 2):
        again = node.module("pods", args)
        assert not again["changed"] and again["actions"] == [], (rerun, again)
        assert {name: netns_pids(node, name) for name in want} == trees

    # the leader of a forking shell dies, its child lives on: still the same workload
    forkwait = f"{node.prefix}-forkwait"
    leader = rec[forkwait]["pid"]
    node.sh(["kill", "-KILL", str(leader)])
    again = node.module("pods", args)
    assert not again["changed"], again
    assert netns_pids(node, forkwait) == [p for p in trees[forkwait] if p != leader]

    # the whole tree killed: check mode says so and starts nothing; the run restarts it once
    bashc = f"{node.prefix}-bashc"
    node.sh(["kill", "-KILL"] + [str(p) for p in trees[bashc] + netns_pids(node, forkwait)])
    check = node.module("pods", args, check_mode=True)
    assert check["changed"] and sorted(check["actions"]) == [
        f"{bashc}: restart workload bash -c sleep 600; true (was dead)",
        f"{forkwait}: restart workload sh -c sleep 600 & wait (was dead)"], check
    assert "(dead)" in check["diff"]["before"]
    assert netns_pids(node, bashc) == [] and netns_pids(node, forkwait) == []
    r = node.module("pods", args)
    assert r["changed"] and sorted(r["actions"]) == sorted(check["actions"])
    assert len(netns_pids(node, bashc)) == 2 and len(netns_pids(node, forkwait)) == 2
    assert not node.module("pods", args)["changed"]

    plain = f"{node.prefix}-plain"

    # a changed command: the old tree stops, the new one starts
    env = f"{node.prefix}-env"
    changed_pods = [dict(p, command=["sh", "-c", "sleep 601 & wait"]) if p["name"] == env else p for p in pods]
    args = pod_args(node, changed_pods, gateways=["10.77.0.1"])
    r = node.module("pods", args)
    assert f"{env}: stop workload (pid {trees[env][0]}; command changed)" in r["actions"], r["actions"]
    assert not node.running(trees[env][0])
    new_env = netns_pids(node, env)
    assert len(new_env) == 2 and not set(new_env) & set(trees[env])
    assert not node.module("pods", args)["changed"]

    # prune two pods; something else runs in one of them (a shell someone opened there):
    # every process goes, and the namespaces with them
    gone = {bashc: netns_pids(node, bashc), forkwait: netns_pids(node, forkwait)}
    node.sh(["sh", "-c", f"ip netns exec {bashc} setsid sleep 700 </dev/null >/dev/null 2>&1 &"])
    deadline = time.monotonic() + 5
    while len(netns_pids(node, bashc)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    intruder = [p for p in netns_pids(node, bashc) if p not in gone[bashc]]
    assert len(intruder) == 1
    keep = [p for p in changed_pods if p["name"] not in gone]
    args = pod_args(node, keep, gateways=["10.77.0.1"])
    check = node.module("pods", args, check_mode=True)
    assert f"{bashc}: stop 1 other process(es) in the pod ({intruder[0]} sleep)" in check["actions"], check
    r = node.module("pods", args)
    assert r["changed"]
    for name, pids in gone.items():
        assert name not in node.netns()
        assert not any(node.running(p) for p in pids + intruder), name
        assert veth_name(name) not in node.ip("-br", "link")
    assert not node.module("pods", args)["changed"]

    # teardown (state: absent): no process of any tree is left, no namespace either
    left = {name: netns_pids(node, name) for name in (plain, env)}
    assert all(left.values())
    r = node.module("pods", {"state": "absent"})
    assert r["changed"] and node.netns() == []
    assert not any(node.running(p) for pids in left.values() for p in pids)
    assert "veth" not in node.ip("-br", "link")
