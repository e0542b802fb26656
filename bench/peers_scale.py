# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurement: one peers module call on a node with many peers (issue: big nodes).

In a throwaway node with a veth standing in for the underlay, the module programs N peers,
then runs again unchanged: host-gw (one route each) and VXLAN (a real VXLAN device with a
neighbour, an FDB entry and an onlink route each). Whole module processes are timed, as
Ansible runs them; ratios are against 10 peers measured in the same run.
"""

from __future__ import annotations

import json
import os
import sys
import time

from common import PREFIX, ThrowawayNode, collection_root, fmt, median, mkdtemp, ratio, run, table

MODULE = "ansible_collections.flatnet.cluster.plugins.modules.peers"
UNDERLAY = "u0"
LOCAL_IP = "10.200.0.1"


def _peers(n, mode):
    peers = []
    for i in range(1, n + 1):
        third, fourth = divmod(i + 1, 250)
        peers.append({
            "name": f"peer{i:05d}", "mode": mode, "underlay_ip": f"10.200.{third}.{fourth + 2}",
            "pod_cidrs": [f"100.{64 + i // 256}.{i % 256}.0/24"],
            "vtep_ips": [f"100.{64 + i // 256}.{i % 256}.0"],
            "vtep_mac": "0e:%02x:%02x:%02x:00:01" % (i >> 16 & 255, i >> 8 & 255, i & 255),
        })
    return peers


def _call(node, root, args):
    env = dict(os.environ, PYTHONPATH=root)
    start = time.perf_counter()
    res = run(node.prefix() + [sys.executable, "-m", MODULE], input=json.dumps({"ANSIBLE_MODULE_ARGS": args}),
              env=env, timeout=600)
    seconds = time.perf_counter() - start
    result = json.loads(res.stdout.strip().splitlines()[-1])
    if result.get("failed"):
        raise RuntimeError(f"peers module failed: {result.get('msg')}")
    return seconds, result


def one(n, mode, root):
    node = ThrowawayNode(f"pe{mode[0]}{n}")
    try:
        run(node.prefix() + ["sh", "-c", f"ip link add {UNDERLAY} type veth peer name u1 && "
                             f"ip addr add {LOCAL_IP}/16 dev {UNDERLAY} && ip link set {UNDERLAY} up && "
                             "ip link set u1 up"])
        args = {"underlay_interface": UNDERLAY, "peers": _peers(n, mode), "state_dir": mkdtemp("peers-state"),
                "vxlan": {"device": f"{PREFIX[:6]}vx", "vni": 1, "port": 8472, "local_ip": LOCAL_IP,
                          "mac": "0e:00:00:00:00:01", "addresses": ["100.64.0.0/32"], "mtu": 1450,
                          "underlay_interface": UNDERLAY}}
        first, result = _call(node, root, args)
        if not result.get("changed"):
            raise RuntimeError("the first run changed nothing")
        again, result = _call(node, root, args)
        if result.get("changed"):
            raise RuntimeError(f"an unchanged rerun reported changes: {result.get('actions', [])[:3]}")
        routes = run(node.prefix() + ["ip", "-4", "route", "show", "proto", "157"]).stdout.count("\n")
        if routes != n:
            raise RuntimeError(f"{routes} routes after programming {n} peers")
        return {"first_s": first, "rerun_s": again}
    finally:
        node.close()


def measure(sizes, reps, log=print):
    root = collection_root()
    rows = []
    for mode in ("direct", "vxlan"):
        for n in sizes:
            samples = [one(n, mode, root) for _ in range(reps)]
            row = {"mode": mode, "peers": n,
                   "first_s": median([s["first_s"] for s in samples]),
                   "rerun_s": median([s["rerun_s"] for s in samples])}
            rows.append(row)
            log(f"peers: {n} {mode} peers in {fmt(row['first_s'])} s, unchanged rerun {fmt(row['rerun_s'])} s")
    base = {r["mode"]: r for r in rows if r["peers"] == min(sizes)}
    for r in rows:
        r["rerun_vs_smallest"] = ratio(r["rerun_s"], base[r["mode"]]["rerun_s"])
    return {"rows": rows, "reps": reps, "sizes": sizes}


def report(result):
    return table(
        f"One peers module call (whole process, medians of {result['reps']})",
        ["mode", "peers", "first run s", "unchanged rerun s", f"rerun / {min(result['sizes'])} peers"],
        [[r["mode"], str(r["peers"]), r["first_s"], r["rerun_s"], r["rerun_vs_smallest"]] for r in result["rows"]])


def check_targets(result):
    checks = []
    for r in result["rows"]:
        if r["peers"] >= 1000:
            checks.append((f"{r['peers']} {r['mode']} peers in one call < 1 s", r["first_s"] < 1, fmt(r["first_s"])))
            checks.append((f"unchanged rerun, {r['peers']} {r['mode']} peers <= 1.5x {min(result['sizes'])} peers",
                           r["rerun_vs_smallest"] <= 1.5, fmt(r["rerun_vs_smallest"])))
    return checks
