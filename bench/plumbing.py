# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurement 1: pod plumbing cost per pod on one node.

The collection's pods module (one process for all pods) against the CNI reference plugins
(one exec per pod) and a naive role (one ``ip`` process per step), each in a fresh
throwaway node, interleaved in every repetition so that the machine's noise hits all alike.
"""

from __future__ import annotations

import json
import os
import random
import sys

from common import PREFIX, REPO_ROOT, Skip, ThrowawayNode, collection_root, fmt, median, mkdtemp, ratio, run, table

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plumbing_driver.py")
CNI_PATH = "/usr/lib/cni"
METHODS = ("module", "cni", "ip")


def available():
    """Which ways can run here, and why not the others."""
    ways, missing = [], {}
    if os.path.exists(os.path.join(REPO_ROOT, "plugins", "modules", "pods.py")):
        ways.append("module")
    else:
        missing["module"] = "plugins/modules/pods.py does not exist yet"
    if all(os.access(os.path.join(CNI_PATH, p), os.X_OK) for p in ("bridge", "host-local", "loopback")):
        ways.append("cni")
    else:
        missing["cni"] = f"CNI plugins missing in {CNI_PATH} (apt-get install containernetworking-plugins)"
    ways.append("ip")
    return ways, missing


def one(method, n, pythonpath):
    node = ThrowawayNode(f"p{method[0]}{n}")
    try:
        spec = {
            "method": method, "bridge": f"{PREFIX}br", "mtu": 1500,
            "pods": [f"{PREFIX}-p{i:03d}" for i in range(n)],
            "python": sys.executable, "pythonpath": pythonpath,
            "state_dir": mkdtemp("state"), "cni_dir": mkdtemp("cni"), "cni_path": CNI_PATH,
        }
        res = run(node.prefix() + [sys.executable, DRIVER], input=json.dumps(spec), timeout=600)
        return json.loads(res.stdout)
    finally:
        node.close()


def measure(sizes, reps, log=print):
    ways, missing = available()
    for way, why in missing.items():
        log(f"plumbing: skipping {way}: {why}")
    pythonpath = collection_root()
    samples = {(m, n): [] for m in ways for n in sizes}
    errors = {}
    for rep in range(reps):
        for n in sizes:
            order = list(ways)
            random.shuffle(order)
            for method in order:
                if (method, n) in errors:
                    continue
                try:
                    samples[(method, n)].append(one(method, n, pythonpath))
                except RuntimeError as exc:
                    errors[(method, n)] = str(exc)
                    log(f"plumbing: {method} with {n} pods failed: {exc}")
        log(f"plumbing: repetition {rep + 1}/{reps} done")
    return summarize(sizes, ways, samples, errors, missing)


def summarize(sizes, ways, samples, errors, missing):
    rows = []
    for n in sizes:
        row = {"pods": n}
        for method in ways:
            runs = samples[(method, n)]
            for key in ("add_s", "del_s", "rerun_s", "bridge_plugin_s", "netns_s"):
                vals = [r[key] for r in runs if key in r]
                if vals:
                    row[f"{method}_{key}"] = median(vals)
                    row[f"{method}_{key[:-2]}_ms_per_pod"] = median(vals) * 1000 / n
            if method == "module" and runs:
                row["module_rerun_changed"] = any(r.get("rerun_changed") for r in runs)
            row[f"{method}_runs"] = len(runs)
        # Ratios per pod at this size; the same n on both sides, so per-pod = total.
        row["add_module_vs_cni"] = ratio(row.get("module_add_s"), row.get("cni_add_s"))
        row["add_module_vs_cni_bridge_only"] = ratio(row.get("module_add_s"), row.get("cni_bridge_plugin_s"))
        row["add_module_vs_ip"] = ratio(row.get("module_add_s"), row.get("ip_add_s"))
        row["add_cni_vs_ip"] = ratio(row.get("cni_add_s"), row.get("ip_add_s"))
        row["del_module_vs_cni"] = ratio(row.get("module_del_s"), row.get("cni_del_s"))
        row["del_module_vs_ip"] = ratio(row.get("module_del_s"), row.get("ip_del_s"))
        rows.append(row)
    result = {"sizes": sizes, "ways": ways, "rows": rows, "missing": missing,
              "errors": {f"{m}/{n}": e for (m, n), e in errors.items()},
              "raw": {f"{m}/{n}": v for (m, n), v in samples.items()}}
    small, big = (min(sizes), max(sizes))
    lookup = {r["pods"]: r for r in rows}
    result["rerun_big_vs_small"] = ratio(lookup[big].get("module_rerun_s"), lookup[small].get("module_rerun_s"))
    # Marginal cost of one more pod (slope between the smallest and largest size): what
    # is left once the fixed cost of a call (Python and Ansible start-up) is taken out.
    marginal = {}
    if big > small:
        for method in ways:
            for key in ("add", "del"):
                a, b = lookup[big].get(f"{method}_{key}_s"), lookup[small].get(f"{method}_{key}_s")
                if a is not None and b is not None:
                    marginal[f"{method}_{key}_ms_per_pod"] = (a - b) * 1000 / (big - small)
        marginal["add_module_vs_cni"] = ratio(marginal.get("module_add_ms_per_pod"), marginal.get("cni_add_ms_per_pod"))
        marginal["del_module_vs_cni"] = ratio(marginal.get("module_del_ms_per_pod"), marginal.get("cni_del_ms_per_pod"))
    result["marginal"] = marginal
    return result


def report(result):
    rows = result["rows"]
    out = []

    def ms(row, key):
        return row.get(key)

    out.append(table(
        "Pod plumbing, ADD (ms per pod, medians)",
        ["pods", "module", "CNI", "CNI bridge only", "ip per step", "module/CNI", "module/ip", "CNI/ip"],
        [[str(r["pods"]), ms(r, "module_add_ms_per_pod"), ms(r, "cni_add_ms_per_pod"),
          ms(r, "cni_bridge_plugin_ms_per_pod"), ms(r, "ip_add_ms_per_pod"),
          r["add_module_vs_cni"], r["add_module_vs_ip"], r["add_cni_vs_ip"]] for r in rows]))
    out.append(table(
        "Pod plumbing, teardown (ms per pod, medians)",
        ["pods", "module absent", "CNI DEL", "ip per step", "module/CNI", "module/ip"],
        [[str(r["pods"]), ms(r, "module_del_ms_per_pod"), ms(r, "cni_del_ms_per_pod"),
          ms(r, "ip_del_ms_per_pod"), r["del_module_vs_cni"], r["del_module_vs_ip"]] for r in rows]))
    mg = result.get("marginal") or {}
    if mg:
        out.append(table(
            f"Marginal cost of one more pod, {min(result['sizes'])} -> {max(result['sizes'])} pods (ms per pod)",
            ["step", "module", "CNI", "ip per step", "module/CNI"],
            [[step, mg.get(f"module_{key}_ms_per_pod"), mg.get(f"cni_{key}_ms_per_pod"), mg.get(f"ip_{key}_ms_per_pod"),
              mg.get(f"{key}_module_vs_cni")] for step, key in (("create", "add"), ("teardown", "del"))]))
    if any("module_rerun_s" in r for r in rows):
        out.append(table(
            "Pods module, unchanged rerun (whole call, ms)",
            ["pods", "rerun ms", "changed"],
            [[str(r["pods"]), (r.get("module_rerun_s") or 0) * 1000, str(r.get("module_rerun_changed"))] for r in rows]))
        out.append(f"rerun {max(result['sizes'])} pods / rerun {min(result['sizes'])} pod: {fmt(result['rerun_big_vs_small'])}")
    for way, why in result["missing"].items():
        out.append(f"not measured: {way}: {why}")
    for key, err in result["errors"].items():
        out.append(f"FAILED: {key}: {err}")
    return "\n\n".join(out)


def check_targets(result):
    """(target, met or None, detail) for the targets of this measurement."""
    checks = []
    for r in result["rows"]:
        if r["pods"] < 10:
            continue  # one pod measures the module's start-up, not plumbing
        v = r.get("add_module_vs_cni")
        checks.append((f"module create <= 0.3x CNI per pod ({r['pods']} pods)", None if v is None else v <= 0.3, fmt(v)))
    v = (result.get("marginal") or {}).get("add_module_vs_cni")
    if v is not None and max(result["sizes"]) >= 50:
        checks.append(("module create <= 0.3x CNI, marginal cost per pod", v <= 0.3, fmt(v)))
    return checks


def require_module():
    if "module" not in available()[0]:
        raise Skip("plugins/modules/pods.py does not exist yet")
