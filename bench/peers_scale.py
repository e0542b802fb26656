# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurement: one peers module call on a node with many peers (issue: big nodes).

In a throwaway node with a veth standing in for the underlay, the module programs N peers,
then runs again unchanged: host-gw (one route each) and VXLAN (a real VXLAN device with a
neighbour, an FDB entry and an onlink route each). Whole module processes are timed, as
Ansible runs them; ratios are against 10 peers measured in the same run.

The peers go as peer lines (one string per peer, what the backend role passes, from
``peers_of(node, lines=true)``) and, for comparison, as mappings (six keys per peer). The
sizes, modes and forms are interleaved within each repetition, so that the machine's drift
hits all alike.
"""

from __future__ import annotations

import json
import os
import resource
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


def _cpu():
    """CPU seconds (user + system) of the finished child processes and their descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _call(node, root, args):
    env = dict(os.environ, PYTHONPATH=root)
    cpu = _cpu()
    start = time.perf_counter()
    res = run(node.prefix() + [sys.executable, "-m", MODULE], input=json.dumps({"ANSIBLE_MODULE_ARGS": args}),
              env=env, timeout=600)
    seconds = time.perf_counter() - start
    # The CPU time of the module process tree (module, ip, bridge) moves far less with the
    # machine's load than the wall time does: the ratios are given for both.
    cpu = _cpu() - cpu
    result = json.loads(res.stdout.strip().splitlines()[-1])
    if result.get("failed"):
        raise RuntimeError(f"peers module failed: {result.get('msg')}")
    return seconds, cpu, result


def _lines(peers):
    sys.path.insert(0, collection_root())
    from ansible_collections.flatnet.cluster.plugins.module_utils.peers_reconcile import peer_line
    return [peer_line(peer) for peer in peers]


FORMS = ("lines", "mappings")


def one(n, mode, root, form="lines"):
    node = ThrowawayNode(f"pe{mode[0]}{n}")
    try:
        run(node.prefix() + ["sh", "-c", f"ip link add {UNDERLAY} type veth peer name u1 && "
                             f"ip addr add {LOCAL_IP}/16 dev {UNDERLAY} && ip link set {UNDERLAY} up && "
                             "ip link set u1 up"])
        args = {"underlay_interface": UNDERLAY, "peers": _lines(_peers(n, mode)) if form == "lines" else _peers(n, mode), "state_dir": mkdtemp("peers-state"),
                "vxlan": {"device": f"{PREFIX[:6]}vx", "vni": 1, "port": 8472, "local_ip": LOCAL_IP,
                          "mac": "0e:00:00:00:00:01", "addresses": ["100.64.0.0/32"], "mtu": 1450,
                          "underlay_interface": UNDERLAY}}
        first, first_cpu, result = _call(node, root, args)
        if not result.get("changed"):
            raise RuntimeError("the first run changed nothing")
        again, again_cpu, result = _call(node, root, args)
        if result.get("changed"):
            raise RuntimeError(f"an unchanged rerun reported changes: {result.get('actions', [])[:3]}")
        routes = run(node.prefix() + ["ip", "-4", "route", "show", "proto", "157"]).stdout.count("\n")
        if routes != n:
            raise RuntimeError(f"{routes} routes after programming {n} peers")
        return {"first_s": first, "rerun_s": again, "first_cpu": first_cpu, "rerun_cpu": again_cpu}
    finally:
        node.close()


def measure(sizes, reps, log=print):
    root = collection_root()
    samples = {(mode, n, form): [] for mode in ("direct", "vxlan") for n in sizes for form in FORMS}
    for _rep in range(reps):
        for key in samples:  # interleaved: every size, mode and form once per repetition
            samples[key].append(one(key[1], key[0], root, key[2]))
    rows = []
    for (mode, n, form), got in samples.items():
        row = {"mode": mode, "peers": n, "form": form,
               "first_s": median([s["first_s"] for s in got]),
               "rerun_s": median([s["rerun_s"] for s in got]),
               "first_cpu": median([s["first_cpu"] for s in got]),
               "rerun_cpu": median([s["rerun_cpu"] for s in got])}
        rows.append(row)
        log(f"peers: {n} {mode} peers ({form}) in {fmt(row['first_s'])} s, unchanged rerun {fmt(row['rerun_s'])} s")
    base = {(r["mode"], r["form"]): r for r in rows if r["peers"] == min(sizes)}
    for r in rows:
        r["rerun_vs_smallest"] = ratio(r["rerun_s"], base[r["mode"], r["form"]]["rerun_s"])
        r["rerun_cpu_vs_smallest"] = ratio(r["rerun_cpu"], base[r["mode"], r["form"]]["rerun_cpu"])
    return {"rows": rows, "reps": reps, "sizes": sizes, "load": os.getloadavg()[0]}


def report(result):
    return table(
        f"One peers module call (whole process, medians of {result['reps']}, load {fmt(result.get('load'))})",
        ["mode", "peers", "form", "first run s", "unchanged rerun s", f"rerun / {min(result['sizes'])} peers",
         "rerun CPU s", "CPU ratio"],
        [[r["mode"], str(r["peers"]), r.get("form", "mappings"), r["first_s"], r["rerun_s"], r["rerun_vs_smallest"],
          r.get("rerun_cpu"), r.get("rerun_cpu_vs_smallest")]
         for r in result["rows"]])


def check_targets(result):
    checks = []
    for r in result["rows"]:
        # The targets hold for the form the backend role uses (peer lines).
        if r["peers"] >= 1000 and r.get("form", "lines") == "lines":
            checks.append((f"{r['peers']} {r['mode']} peers in one call < 1 s", r["first_s"] < 1, fmt(r["first_s"])))
            checks.append((f"unchanged rerun, {r['peers']} {r['mode']} peers <= 1.5x {min(result['sizes'])} peers",
                           r["rerun_vs_smallest"] <= 1.5, fmt(r["rerun_vs_smallest"])))
            if r.get("rerun_cpu_vs_smallest") is not None:
                checks.append((f"same, in CPU time ({r['mode']})", r["rerun_cpu_vs_smallest"] <= 1.5,
                               fmt(r["rerun_cpu_vs_smallest"])))
    return checks
