#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""The 100-node lab end to end, one step at a time, with wall time and peak memory.

    sudo .venv/bin/python bench/lab100.py                      # inventories/lab-100 as checked in
    sudo .venv/bin/python bench/lab100.py --nodes 8 --per-subnet 8 --pods 100 --no-compare

Steps: lab_up.yml, site.yml (deploy), verify.yml (sampled: the inventory's
flatnet_verify_sample), site.yml again (must report changed=0), then, unless --no-compare,
a two-task playbook (ansible.builtin.ping and flatnet.cluster.node_facts on every node: the
per-task, per-node cost that the settings change, at a fraction of a site.yml rerun's time)
with other Ansible settings, interleaved (forks 25 / 5 / 50 and pipelining off,
--compare-reps rounds, then forks 25 once more), then teardown.yml and lab_down.yml, and a
check that nothing of the lab is left (`ip netns list`, `ip -br link`, its state dir).

For each step: wall time; CPU time of the whole process tree (user + system, from wait4: what
the step costs whatever else runs on the machine); peak memory of the ansible-playbook process tree (controller, its
forks and the module processes in the nodes, sampled every 0.5 s, summed RSS); the largest
single process (wait4 maxrss); the 1-minute load average before the step. Ansible runs with
the inventory's ansible.cfg (ANSIBLE_CONFIG), the lab gets a per-run name (h100 + 3 hex digits
unless --name) and is destroyed even when a step fails or on Ctrl-C. A JSON copy of the
table goes to bench/results/lab100-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import PREFIX, REPO_ROOT, RESULTS_DIR, collection_root, mkdtemp, on_cleanup, done  # noqa: E402

INVENTORY = os.path.join(REPO_ROOT, "inventories", "lab-100")
PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# The settings compared on the unchanged rerun; the first is the inventory's ansible.cfg.
COMPARE_PLAYBOOK = """---
- name: Settings comparison, two tasks on every node
  hosts: flatnet_nodes
  gather_facts: false
  tasks:
    - name: Reach the node
      ansible.builtin.ping:

    - name: Read the node (underlay, kernel features)
      flatnet.cluster.node_facts:
"""
COMPARE = [
    ("forks 25, pipelining (ansible.cfg)", {}),
    ("forks 5 (Ansible's default)", {"ANSIBLE_FORKS": "5"}),
    ("forks 50", {"ANSIBLE_FORKS": "50"}),
    ("forks 25, no pipelining", {"ANSIBLE_PIPELINING": "False"}),
]


def load1():
    with open("/proc/loadavg", encoding="ascii") as handle:
        return float(handle.read().split()[0])


def _children_map():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree_rss_mb(root):
    """Summed RSS of root and its descendants, in MB."""
    kids = _children_map()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
                total += int(handle.read().split()[1])
        except OSError:
            pass
    return total * os.sysconf("SC_PAGE_SIZE") / 1e6


def run_step(argv, env, log_path, timeout):
    """Run argv; return (seconds, rc, output, peak tree RSS MB, max single RSS MB, CPU seconds)."""
    peak = [0.0]
    with open(log_path, "w", encoding="utf-8") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], tree_rss_mb(proc.pid))
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        entry = on_cleanup(common.kill_group, proc)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                common.kill_group(proc)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        done(entry)  # the process is gone: nothing left to kill
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        output = handle.read()
    # CPU time of the whole tree (every process of it was waited for): the figure the load
    # of other jobs does not change, and the floor of the wall time on an idle machine.
    return elapsed, proc.returncode, output, peak[0], usage.ru_maxrss / 1e3, usage.ru_utime + usage.ru_stime


def recap(output):
    hosts = RECAP.findall(output)
    return {"hosts": len(hosts), "changed": sum(int(h[2]) for h in hosts),
            "unreachable": sum(int(h[3]) for h in hosts), "failed": sum(int(h[4]) for h in hosts)}


def leftovers(name):
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=False).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(name)]
    found += [f"link {line.split()[0]}" for line in links.splitlines() if name in line]
    if os.path.exists(os.path.join("/run/flatnet/lab", name)):
        found.append(f"/run/flatnet/lab/{name}")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, help="generate a lab of this many nodes (default: the checked-in 100)")
    parser.add_argument("--per-subnet", type=int, default=5)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--sample", type=int, default=10, help="flatnet_verify_sample of a generated lab")
    parser.add_argument("--name", default=None, help="lab name (default h100 + 3 hex digits)")
    parser.add_argument("--no-compare", action="store_true", help="skip the Ansible settings comparison")
    parser.add_argument("--compare-reps", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800, help="per step, seconds")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/lab100.py: needs root (namespaces, nsenter)", file=sys.stderr)
        return 2
    common.install_handlers()
    name = args.name or f"h100{PREFIX[1:4]}"
    stamp = time.strftime("%Y%m%dT%H%M%S")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    logs = os.path.join(RESULTS_DIR, f"lab100-{stamp}")
    os.makedirs(logs)
    work = mkdtemp("h100")
    if args.nodes:
        inventory = os.path.join(work, "inventory")
        subprocess.run([sys.executable, os.path.join(INVENTORY, "generate.py"), "--nodes", str(args.nodes),
                        "--per-subnet", str(args.per_subnet), "--pods", str(args.pods),
                        "--sample", str(args.sample), "--out", inventory], check=True)
        shutil.copy(os.path.join(INVENTORY, "ansible.cfg"), inventory)
        nodes, pods = args.nodes, args.pods
    else:
        inventory = INVENTORY
        subprocess.run([sys.executable, os.path.join(INVENTORY, "generate.py"), "--check"], check=True)
        nodes, pods = 100, 10
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(inventory, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=collection_root(), ANSIBLE_HOME=os.path.join(work, "ansible-home"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="0",
               FLATNET_LAB_NAME=name, PYTHONDONTWRITEBYTECODE="1")
    for var in ("ANSIBLE_INVENTORY", "ANSIBLE_FORKS", "ANSIBLE_PIPELINING", "ANSIBLE_STDOUT_CALLBACK", "TMPDIR"):
        env.pop(var, None)
    playbook_bin = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.access(playbook_bin, os.X_OK):
        playbook_bin = shutil.which("ansible-playbook")
    rows, failures = [], []

    def step(label, playbook, extra_env=None, expect_unchanged=False, fatal=True):
        playbook = playbook if os.path.isabs(playbook) else os.path.join(PLAYBOOKS, playbook)
        log_path = os.path.join(logs, re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") + f"-{len(rows)}.log")
        before = load1()
        seconds, rc, output, peak, single, cpu = run_step(
            [playbook_bin, "-i", os.path.join(inventory, "hosts.yml"), playbook],
            dict(env, **(extra_env or {})), log_path, args.timeout)
        rec = recap(output)
        row = {"step": label, "playbook": os.path.basename(playbook), "seconds": round(seconds, 1), "rc": rc,
               "cpu_s": round(cpu, 1), "peak_tree_mb": round(peak), "max_process_mb": round(single), "load1": before,
               "load1_after": load1(), "log": log_path, **rec}
        rows.append(row)
        print(f"{label:<42} {seconds:8.1f} s  cpu {cpu:7.1f} s  rc={rc}  changed={rec['changed']} failed={rec['failed']} "
              f"tree {peak:6.0f} MB  max {single:5.0f} MB  load {before:.1f}", flush=True)
        problem = None
        if rc != 0:
            problem = f"{label}: rc={rc} (log {log_path})"
        elif expect_unchanged and rec["changed"]:
            problem = f"{label}: changed={rec['changed']}, expected 0 (log {log_path})"
        if problem:
            failures.append(problem)
            if fatal:
                raise RuntimeError(problem)
        return row

    up = [False]

    def lab_down():
        if up[0]:
            step("lab_down.yml", "lab_down.yml", fatal=False)
            up[0] = False

    down_entry = on_cleanup(lab_down)
    print(f"lab {name}: {nodes} nodes x {pods} pods, inventory {inventory}, logs {logs}", flush=True)
    try:
        up[0] = True
        step("lab_up.yml", "lab_up.yml")
        step("site.yml (deploy)", "site.yml")
        step("verify.yml (sampled)", "verify.yml", fatal=False)
        step("site.yml (unchanged rerun)", "site.yml", expect_unchanged=True)
        if not args.no_compare:
            compare = os.path.join(work, "compare.yml")
            with open(compare, "w", encoding="utf-8") as handle:
                handle.write(COMPARE_PLAYBOOK)
            for rep in range(args.compare_reps):
                for label, extra in COMPARE:
                    step(f"compare, {label} #{rep + 1}", compare, extra, expect_unchanged=True, fatal=False)
            # The baseline once more at the end (A B C D A): load that drifts during the rounds
            # weighs on both sides of the ratios.
            step(f"compare, {COMPARE[0][0]} #end", compare, expect_unchanged=True, fatal=False)
        step("teardown.yml", "teardown.yml")
    finally:
        done(down_entry)
        left = leftovers(name)
        if left:
            failures.append("left behind: " + ", ".join(left))
        summary = {"name": name, "nodes": nodes, "pods_per_node": pods, "inventory": inventory,
                   "rows": rows, "failures": failures, "left_behind": left}
        if not args.no_compare:
            base = [r["seconds"] for r in rows if r["step"].startswith("compare, " + COMPARE[0][0])]
            ratios = {}
            for label, _extra in COMPARE[1:]:
                other = [r["seconds"] for r in rows if r["step"].startswith("compare, " + label)]
                if base and other:
                    ratios[label] = round(sorted(other)[len(other) // 2] / sorted(base)[len(base) // 2], 2)
            summary["compare_ratios"] = ratios
            print("settings vs forks 25 + pipelining (two-task playbook, medians): " + json.dumps(ratios))
        out = os.path.join(RESULTS_DIR, f"lab100-{stamp}.json")
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
        print(f"results: {out}")
        print("left behind: " + (", ".join(left) if left else "nothing"))
        for problem in failures:
            print("FAILED: " + problem)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
