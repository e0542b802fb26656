# SPDX-License-Identifier: GPL-3.0-or-later
"""The bgp module with real BIRD 2 in three throwaway nodes on one bridge (in node1).

node1 and node2 run the module (full mesh); "rogue" runs a hand-written BIRD that announces
node1's CIDR as its own, a default route, the underlay, a prefix outside the cluster and its
own planned CIDR. node1 must learn exactly node2's CIDR and rogue's planned CIDR, in the
kernel as ``proto bird`` (12); a rerun changes nothing; a changed plan reloads without a
restart; killing node2's BIRD withdraws its route from node1; absent leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.flatnet.cluster.tests.unit.plugins.modules.throwaway import ThrowawayNode, kernel_tests_possible

pytestmark = pytest.mark.skipif(not (kernel_tests_possible() and shutil.which("bird")),
                                reason="needs root, unshare/nsenter and bird (Debian bird2)")

CLUSTER = "10.244.0.0/16"
IPS = {"node1": "192.168.77.11", "node2": "192.168.77.12", "rogue": "192.168.77.13"}
CIDRS = {"node1": "10.244.0.0/24", "node2": "10.244.1.0/24", "rogue": "10.244.2.0/24"}


def view(me, others, hold=9):
    return {"router_id": IPS[me], "underlay_network": "192.168.77.0/24", "asn": 64512, "hold_time": hold, "keepalive_time": 3,
            "pod_cidrs": [CIDRS[me]], "cluster_cidrs": [CLUSTER], "role": "mesh", "rr_cluster_id": None,
            "sessions": [{"name": o, "address": IPS[o], "rr_client": False} for o in others],
            "accept": [{"node": o, "prefix": CIDRS[o], "next_hop": IPS[o]} for o in others]}


ROGUE = """router id 192.168.77.13;
protocol device {}
protocol static { ipv4;
  route 10.244.0.0/24 blackhole; route 10.244.2.0/24 blackhole; route 0.0.0.0/0 blackhole;
  route 192.168.77.0/24 blackhole; route 172.31.0.0/24 blackhole; route 10.244.0.128/25 blackhole; }
protocol bgp n1 { local 192.168.77.13 as 64512; neighbor 192.168.77.11 as 64512; direct;
  hold time 9; keepalive time 3; connect retry time 2; error wait time 1,5;
  ipv4 { import none; export all; }; }
"""


def nsenter_net(pid, *argv):
    # Only the network namespace: PIDs stay the machine's, so "netns PID" names the other node.
    res = subprocess.run(["nsenter", "-t", str(pid), "-n", "--"] + [str(a) for a in argv],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{argv}: {res.stderr}"


@pytest.fixture
def lab():
    nodes = {}
    try:
        for name in IPS:
            nodes[name] = ThrowawayNode()
        hub = nodes["node1"]
        nsenter_net(hub.pid, "ip", "link", "add", "br0", "type", "bridge")
        nsenter_net(hub.pid, "ip", "addr", "add", IPS["node1"] + "/24", "dev", "br0")
        nsenter_net(hub.pid, "ip", "link", "set", "br0", "up")
        for name in ("node2", "rogue"):
            port = f"v{name}"
            nsenter_net(hub.pid, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                        "netns", nodes[name].pid)
            nsenter_net(hub.pid, "ip", "link", "set", port, "master", "br0", "up")
            nodes[name].ip("addr", "add", IPS[name] + "/24", "dev", "eth0")
            nodes[name].ip("link", "set", "eth0", "up")
        yield nodes
    finally:
        for node in nodes.values():
            node.close()


def run(node, cfg=None, state="present", **kw):
    args = {"state": state, "supervisor": "process", "config_path": f"/run/{node.prefix}-bird.conf",
            "socket": f"/run/{node.prefix}-bird/bird.ctl"}
    if cfg is not None:
        args["config"] = cfg
    return node.module("bgp", dict(args, **kw.pop("args", {})), **kw)


def bird_routes(node):
    return sorted(r["dst"] for r in node.ipj("route", "show", "proto", "bird"))


def wait_for(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return time.monotonic()
        time.sleep(0.1)
    return None


def test_mesh_filters_reload_kill_and_absent(lab):
    n1, n2, rogue = lab["node1"], lab["node2"], lab["rogue"]
    rogue.sh(["sh", "-c", "mkdir -p /run/rb && cat > /run/rb/rogue.conf"], data=ROGUE)
    rogue.sh(["sh", "-c", "bird -s /run/rb/ctl -c /run/rb/rogue.conf"])  # daemonises; dies with the node

    # Check mode on a fresh node changes nothing and says what it would do.
    res = run(n1, view("node1", ["node2", "rogue"]), check_mode=True)
    assert res["changed"] and "start bird (process)" in res["actions"]
    assert not os.path.exists(f"/proc/{n1.pid}/root/run/{n1.prefix}-bird.conf")

    r1 = run(n1, view("node1", ["node2", "rogue"]))
    r2 = run(n2, view("node2", ["node1"]))
    assert r1["changed"] and r2["changed"] and r1["pid"]
    assert wait_for(lambda: bird_routes(n1) == [CIDRS["node2"], CIDRS["rogue"]]), bird_routes(n1)
    # The import filter: not node1's own CIDR from rogue, no default, no underlay, nothing outside
    # the cluster, no more-specific of a planned CIDR.
    routes = {r["dst"]: r for r in n1.ipj("route", "show")}
    assert "default" not in routes and "172.31.0.0/24" not in routes and "10.244.0.128/25" not in routes
    assert routes[CIDRS["node2"]]["gateway"] == IPS["node2"] and routes[CIDRS["node2"]]["protocol"] == "bird"
    assert bird_routes(n2) == [CIDRS["node1"]]

    res = run(n1, view("node1", ["node2", "rogue"]), args={"wait": 10})
    assert not res["changed"] and res["actions"] == [], res["actions"]
    assert {k: v["info"] for k, v in res["sessions"].items()} == {"node2": "Established", "rogue": "Established"}
    assert sorted(r["prefix"] for r in res["routes"]) == [CIDRS["node2"], CIDRS["rogue"]]
    pid = res["pid"]

    # The plan no longer lists rogue: a reload (same PIDs) and its route goes.
    res = run(n1, view("node1", ["node2"]))
    assert res["actions"] == [f"write /run/{n1.prefix}-bird.conf", "reload bird (birdc configure)"]
    assert res["pid"] == pid
    assert wait_for(lambda: bird_routes(n1) == [CIDRS["node2"]]), bird_routes(n1)

    # Kill node2's BIRD: node1 withdraws node2's route (the TCP session closes at once).
    for p in r2["pid"]:
        n2.sh(["kill", "-KILL", str(p)])
    t0 = time.monotonic()
    done = wait_for(lambda: bird_routes(n1) == [], timeout=12)
    assert done is not None and done - t0 < 9.5, "node2's route outlived the hold time"
    # A rerun starts it again and the route comes back.
    res = run(n2, view("node2", ["node1"]))
    assert "start bird (process)" in res["actions"]
    assert wait_for(lambda: bird_routes(n1) == [CIDRS["node2"]]), bird_routes(n1)

    # absent: stopped, routes gone, files gone.
    res = run(n1, state="absent")
    assert res["changed"]
    assert bird_routes(n1) == []
    assert n1.sh(["sh", "-c", f"ls /run/{n1.prefix}-bird.conf {n1.state_dir}/bgp.json 2>/dev/null; true"]).stdout == ""
    assert not run(n1, state="absent")["changed"]


def test_foreign_config_file_is_refused_and_bad_view_fails_before_any_change():
    node = ThrowawayNode()
    try:
        path = f"/run/{node.prefix}-bird.conf"
        node.sh(["sh", "-c", f"echo 'router id 1.2.3.4;' > {path}"])
        res = run(node, view("node1", ["node2"]), expect_fail=True)
        assert "was not written by flatnet.cluster.bgp" in res["msg"] and path in res["msg"]
        assert node.sh(["cat", path]).stdout == "router id 1.2.3.4;\n"
        node.sh(["rm", path])
        bad = dict(view("node1", ["node2"]), pod_cidrs=["10.99.0.0/24"])
        res = run(node, bad, expect_fail=True)
        assert "outside the cluster" in res["msg"]
        assert node.sh(["sh", "-c", f"ls {path} {node.state_dir} 2>/dev/null; true"]).stdout == ""
    finally:
        node.close()
