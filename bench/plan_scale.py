# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurement: the plan's cost in nodes (issue: a plan linear in nodes).

Each size is built in a fresh interpreter (bench/plan_driver.py), first without and then with
the cached plan file (a rerun), alternating; time, plan file size and peak memory, and the
growth ratios between sizes (a linear plan grows 10x from 100 to 1,000 nodes and 5x from 1,000 to 5,000).
"""

from __future__ import annotations

import json
import os
import sys

from common import collection_root, fmt, median, mkdtemp, ratio, run, table

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plan_driver.py")
PODS_PER_NODE = 10


def measure(sizes, reps, log=print):
    root = collection_root()
    work = mkdtemp("plan")
    rows = []
    for n in sizes:
        first, again = [], []
        path = os.path.join(work, f"plan-{n}.json")
        # First runs and reruns alternate, so that the machine's drift hits both alike.
        for _rep in range(reps):
            for samples, extra in ((first, []), (again, ["--rerun"])):
                res = run([sys.executable, DRIVER, root, str(n), str(PODS_PER_NODE), path] + extra, timeout=900)
                samples.append(json.loads(res.stdout.strip().splitlines()[-1]))
        row = {"nodes": n, "pods_per_node": PODS_PER_NODE,
               "first_s": median([s["seconds"] for s in first]),
               "rerun_s": median([s["seconds"] for s in again]),
               "first_cpu": median([s.get("cpu_seconds") for s in first]),
               "rerun_cpu": median([s.get("cpu_seconds") for s in again]),
               "plan_mb": first[0]["plan_bytes"] / 1e6,
               "peak_mb": max(s["peak_mb"] for s in first + again)}
        row["rerun_vs_first"] = ratio(row["rerun_s"], row["first_s"])
        # CPU time moves far less with the load of a shared machine than wall time.
        row["rerun_cpu_vs_first"] = ratio(row["rerun_cpu"], row["first_cpu"])
        rows.append(row)
        log(f"plan: {n} nodes in {fmt(row['first_s'])} s, rerun {fmt(row['rerun_s'])} s, {fmt(row['plan_mb'])} MB")
    for prev, row in zip(rows, rows[1:]):
        row["time_growth"] = ratio(row["first_s"], prev["first_s"])
        row["size_growth"] = ratio(row["plan_mb"], prev["plan_mb"])
        row["node_growth"] = row["nodes"] / prev["nodes"]
    return {"rows": rows, "reps": reps, "load": os.getloadavg()[0]}


def report(result):
    return table(
        f"Plan size and time ({PODS_PER_NODE} pods per node, medians of {result['reps']}, "
        f"load {fmt(result.get('load'))})",
        ["nodes", "plan s", "rerun s", "rerun/first", "CPU rerun/first", "plan MB", "peak MB", "x nodes", "x time",
         "x size"],
        [[str(r["nodes"]), r["first_s"], r["rerun_s"], r["rerun_vs_first"], r.get("rerun_cpu_vs_first"), r["plan_mb"],
          r["peak_mb"], r.get("node_growth"), r.get("time_growth"), r.get("size_growth")] for r in result["rows"]])


def check_targets(result):
    checks = []
    for r in result["rows"]:
        if r["nodes"] >= 5000:
            checks.append((f"plan of {r['nodes']} nodes < 2 s", r["first_s"] < 2, fmt(r["first_s"])))
            checks.append((f"plan of {r['nodes']} nodes < 10 MB", r["plan_mb"] < 10, fmt(r["plan_mb"])))
        # Below 1,000 nodes both take a few hundredths of a second.
        if r["nodes"] >= 1000:
            checks.append((f"plan rerun no slower than the first run ({r['nodes']} nodes)", r["rerun_vs_first"] <= 1.0,
                           fmt(r["rerun_vs_first"])))
            if r.get("rerun_cpu_vs_first") is not None:
                checks.append((f"same, in CPU time ({r['nodes']} nodes)", r["rerun_cpu_vs_first"] <= 1.0,
                               fmt(r["rerun_cpu_vs_first"])))
        if r.get("time_growth") is not None:
            # Linear within a factor 1.5 of the node growth.
            checks.append((f"plan time grows linearly to {r['nodes']} nodes",
                           r["time_growth"] <= 1.5 * r["node_growth"], fmt(r["time_growth"])))
    return checks
