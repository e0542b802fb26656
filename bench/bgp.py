#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Route convergence of the bgp backend on N lab nodes (full mesh, one subnet). Run as root
with the project's venv on PATH:

    bench/bgp.py [--nodes 10,30] [--keep]

For each N: a lab of N+1 nodes, site.yml on N of them (untimed setup), then
  - add: site.yml --limit new (flatnet_group of all N+1): time from the new node's BIRD
    answering on its socket until its pod CIDR is a proto bird route on all N others, and
    the play's wall time;
  - kill: SIGKILL one node's BIRD (PID from its workload record): time until its CIDR left
    all others (the TCP session closes, so this is well under the hold time);
  - freeze: SIGSTOP one node's BIRD (a silent node: no FIN, no keepalives): time until its
    CIDR left all others - the hold time path (flatnet_bgp_hold_time, 9 s by default);
  then the lab is torn down. Prints one table and the load average; JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "molecule", "bgp", "files"))

import bgp_lab  # noqa: E402

STATE_DIR = "/run/flatnet/lab"


def inventory(path, n, lab):
    hosts = "".join(f"            node{i:02d}: {{flatnet_lab_ip: 192.168.{50 + i // 200}.{10 + i % 200}}}\n"
                    for i in range(1, n + 1))
    with open(os.path.join(path, "hosts.yml"), "w", encoding="utf-8") as f:
        f.write("all:\n  children:\n    lab_nodes:\n      children:\n        flatnet_nodes:\n          hosts:\n"
                + hosts + "      hosts:\n        newnode: {flatnet_lab_ip: 192.168.50.250}\n")
    os.makedirs(os.path.join(path, "group_vars"), exist_ok=True)
    with open(os.path.join(path, "group_vars", "lab_nodes.yml"), "w", encoding="utf-8") as f:
        f.write(f"""flatnet_lab_name: {lab}
flatnet_lab_state_dir: {STATE_DIR}
flatnet_lab_subnet: lan
flatnet_lab_subnets: [{{name: lan, cidr: 192.168.48.0/21}}]
flatnet_lab_mtu: 1500
ansible_connection: flatnet.cluster.nsenter
ansible_host: "{{{{ flatnet_lab_state_dir }}}}/{{{{ flatnet_lab_name }}}}/{{{{ inventory_hostname }}}}/pid"
ansible_python_interpreter: /usr/bin/python3
flatnet_cluster_name: {lab}
flatnet_backend: bgp
flatnet_pods_per_node: 1
flatnet_firewall: false
""")


def play(inv, playbook, *extra, env=None):
    t0 = time.monotonic()
    res = subprocess.run(["ansible-playbook", "-i", inv, os.path.join(ROOT, "playbooks", playbook)] + list(extra),
                         capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{playbook} {' '.join(extra)} failed:\n{res.stdout[-3000:]}")
    return time.monotonic() - t0


def plan_cidr(lab, node):
    pid = bgp_lab.node_pid(STATE_DIR, lab, node)
    with open(f"/proc/{pid}/root/etc/flatnet/bird.conf", encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("route ") and "blackhole" in line:
                return line.split()[1]
    raise RuntimeError(f"no pod CIDR in {node}'s bird.conf")


def measure(n, env, keep=False):
    lab = "bg" + secrets.token_hex(2)
    tmp = tempfile.mkdtemp(prefix=f"{lab}-")
    inv = os.path.join(tmp, "hosts.yml")
    inventory(tmp, n, lab)
    names = [f"node{i:02d}" for i in range(1, n + 1)]
    out = {"nodes": n}
    try:
        play(inv, "lab_up.yml", "-e", "flatnet_lab_group=lab_nodes", env=env)
        out["setup_s"] = round(play(inv, "site.yml", env=env), 1)
        pids = {m: bgp_lab.node_pid(STATE_DIR, lab, m) for m in names}

        # add: while the limited play runs, watch for the new node's BIRD to answer, then for its
        # CIDR on every other node (in this thread, so the play's later roles do not count).
        new_pid = bgp_lab.node_pid(STATE_DIR, lab, "newnode")
        seen = {}

        def watch():
            sock = f"/proc/{new_pid}/root/run/flatnet/bird.ctl"
            deadline = time.monotonic() + 600
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.02)
            seen["bird"] = time.monotonic()
            seen["result"] = bgp_lab.poll(pids, plan_cidr(lab, "newnode"), True, 120)
            seen["all"] = time.monotonic()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        out["add_play_s"] = round(play(inv, "site.yml", "-e", "flatnet_group=lab_nodes", "--limit", "newnode",
                                       env=env), 1)
        watcher.join(180)
        res = seen.get("result") or {"missing": ["?"]}
        if res["missing"]:
            raise RuntimeError(f"the new node's CIDR never reached {res['missing']}")
        out["add_converge_s"] = res["max"]  # from BIRD answering on the new node to the last peer's route

        for sig, key in (("KILL", "kill"), ("STOP", "freeze")):
            victim = names[-1] if sig == "KILL" else names[-2]
            # The killed node keeps its stale routes (its BIRD had no time to remove them): it is
            # not a peer that must see the frozen node's withdrawal.
            others = {m: p for m, p in pids.items() if m not in (names[-1], victim)}
            vcidr = plan_cidr(lab, victim)
            vpid = bgp_lab.node_pid(STATE_DIR, lab, victim)
            with open(f"/proc/{vpid}/root/var/lib/flatnet/bgp.json", encoding="utf-8") as f:
                sid = json.load(f)["workload"]["sid"]
            bgp_lab.in_node(vpid, ["kill", f"-{sig}", str(sid)], pidns=True)
            res = bgp_lab.poll(others, vcidr, False, 30)
            if sig == "STOP":
                bgp_lab.in_node(vpid, ["kill", "-CONT", str(sid)], pidns=True)
            out[f"{key}_withdraw_s"] = res["max"]
            out[f"{key}_missing"] = res["missing"]
    finally:
        if not keep:
            subprocess.run(["ansible-playbook", "-i", inv, os.path.join(ROOT, "playbooks", "lab_down.yml"),
                            "-e", "flatnet_lab_group=lab_nodes"], capture_output=True, env=env, check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--nodes", default="10,30")
    ap.add_argument("--keep", action="store_true", help="leave the labs up (debugging)")
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("bird"):
        sys.exit("bench/bgp.py needs root and bird (Debian bird2)")
    env = dict(os.environ)
    if "ANSIBLE_COLLECTIONS_PATH" not in env:
        coll = tempfile.mkdtemp(prefix="bgpbench-coll-")
        os.makedirs(os.path.join(coll, "ansible_collections", "flatnet"))
        os.symlink(ROOT, os.path.join(coll, "ansible_collections", "flatnet", "cluster"))
        env["ANSIBLE_COLLECTIONS_PATH"] = coll
    rows = []
    for n in [int(x) for x in a.nodes.split(",")]:
        load = os.getloadavg()[0]
        row = measure(n, env, a.keep)
        row["load1"] = round(load, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'nodes':>5} {'setup s':>8} {'add play s':>10} {'add conv s':>10} {'kill s':>7} {'freeze s':>8} {'load':>5}")
    for r in rows:
        print(f"{r['nodes']:>5} {r['setup_s']:>8} {r['add_play_s']:>10} {r['add_converge_s']:>10} "
              f"{r['kill_withdraw_s']:>7} {r['freeze_withdraw_s']:>8} {r['load1']:>5}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "bgp.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
