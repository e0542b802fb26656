# SPDX-License-Identifier: GPL-3.0-or-later
"""Lab helper of the bgp scenario and bench/bgp.py (run as root on the controller).

  bgp_lab.py kill STATE_DIR LAB VICTIM CIDR [--signal KILL|STOP] [--timeout S] NODE...
      Kill (or freeze) VICTIM's BIRD by the PID its workload record holds, then time until
      CIDR is gone from the proto bird routes of every NODE. Prints JSON {per_node, max}.
  bgp_lab.py wait STATE_DIR LAB CIDR [--timeout S] NODE...
      Time until CIDR is a proto bird route on every NODE. Prints JSON.
  bgp_lab.py residue STATE_DIR LAB NODE...
      What BGP left on the nodes: bird processes, proto bird routes, files. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def node_pid(state_dir, lab, node):
    with open(os.path.join(state_dir, lab, node, "pid"), encoding="ascii") as f:
        return int(f.read().strip())


def in_node(pid, argv, pidns=False):
    cmd = ["nsenter", "-t", str(pid), "-n", "-m"] + (["-p"] if pidns else []) + ["--"] + argv
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def bird_routes(pid):
    out = in_node(pid, ["ip", "-json", "route", "show", "proto", "bird"]).stdout.strip()
    return {r["dst"] for r in json.loads(out)} if out else set()


def poll(pids, cidr, present, timeout):
    t0 = time.monotonic()
    pending = dict(pids)
    done = {}
    while pending and time.monotonic() - t0 < timeout:
        for node, pid in list(pending.items()):
            if (cidr in bird_routes(pid)) == present:
                done[node] = round(time.monotonic() - t0, 3)
                del pending[node]
        time.sleep(0.05)
    return {"per_node": done, "missing": sorted(pending), "max": max(done.values()) if done and not pending else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["kill", "wait", "gone", "residue"])
    ap.add_argument("state_dir")
    ap.add_argument("lab")
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--signal", default="KILL", choices=["KILL", "STOP"])
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    if a.action == "kill":
        victim, cidr, nodes = a.rest[0], a.rest[1], a.rest[2:]
        vpid = node_pid(a.state_dir, a.lab, victim)
        with open(f"/proc/{vpid}/root/var/lib/flatnet/bgp.json", encoding="utf-8") as f:
            sid = json.load(f)["workload"]["sid"]  # BIRD's PID inside the node's PID namespace
        pids = {n: node_pid(a.state_dir, a.lab, n) for n in nodes}
        res = in_node(vpid, ["kill", f"-{a.signal}", str(sid)], pidns=True)
        if res.returncode != 0:
            sys.exit(f"kill failed: {res.stderr}")
        out = poll(pids, cidr, False, a.timeout)
        out.update(victim=victim, bird_pid=sid, signal=a.signal)
        if a.signal == "STOP":
            in_node(vpid, ["kill", "-CONT", str(sid)], pidns=True)
    elif a.action in ("wait", "gone"):
        cidr, nodes = a.rest[0], a.rest[1:]
        out = poll({n: node_pid(a.state_dir, a.lab, n) for n in nodes}, cidr, a.action == "wait", a.timeout)
    else:
        out = {}
        for n in a.rest:
            pid = node_pid(a.state_dir, a.lab, n)
            procs = in_node(pid, ["sh", "-c", "for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done"],
                            pidns=True).stdout.split()
            files = [p for p in ("/etc/flatnet/bird.conf", "/var/lib/flatnet/bgp.json", "/run/flatnet/bird.ctl")
                     if os.path.lexists(f"/proc/{pid}/root{p}")]
            left = {"bird": [p for p in procs if p == "bird"], "routes": sorted(bird_routes(pid)), "files": files}
            if any(left.values()):
                out[n] = left
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
