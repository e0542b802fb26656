# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurements 2 and 4: whole-playbook wall time on the lab.

For each node count, one lab; for each pods-per-node count (in random order) on it:
site.yml (first deploy), site.yml again (unchanged rerun), verify.yml with sampling and,
while the full mesh stays small, without, then teardown.yml, which leaves the nodes empty
for the next size. The baseline, run on the same lab in the same repetition, is a
one-task playbook (ansible.builtin.ping on every node): Ansible's own fixed cost here.
"""

from __future__ import annotations

import os
import random
import re

from common import Skip, fmt, median, ratio, table
import labctl

NOOP = """---
- name: Baseline, one task on every node
  hosts: flatnet_nodes
  gather_facts: false
  tasks:
    - name: Reach the node
      ansible.builtin.ping:
"""

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def changed_count(output):
    return sum(int(m.group(3)) for m in RECAP.finditer(output))


def measure(node_counts, pod_counts, reps, verify_sample=10, verify_full_max_pairs=10000, log=print, on_deployed=None,
            progress=None):
    """``on_deployed(lab)``, when given, runs once on the first lab whose cluster is up
    (after the rerun and verify, before teardown): the smoke run measures its data plane there.
    ``progress(result)`` gets the summary so far after every size (a long run is not lost
    when it is stopped)."""
    labctl.require("site.yml", "teardown.yml", "lab_up.yml", "lab_down.yml")
    has_verify = os.path.exists(os.path.join(labctl.PLAYBOOKS, "verify.yml"))
    skipped = {}
    if not has_verify:
        skipped["verify"] = "playbooks/verify.yml does not exist yet"
    samples = {}
    errors = {}
    for rep in range(reps):
        for nodes in node_counts:
            lab = labctl.Lab(nodes, tag="p")
            try:
                lab.start()
                noop = os.path.join(lab.dir, "noop.yml")
                with open(noop, "w", encoding="utf-8") as handle:
                    handle.write(NOOP)
                noop_s, _out = lab.playbook(noop)
                order = list(pod_counts)
                random.shuffle(order)
                for pods in order:
                    key = (nodes, pods)
                    if key in errors:
                        continue
                    try:
                        sample = one(lab, nodes, pods, has_verify, verify_sample, verify_full_max_pairs,
                                     on_deployed)
                        on_deployed = None
                    except RuntimeError as exc:
                        errors[key] = str(exc)
                        log(f"playbooks: {nodes} nodes x {pods} pods failed: {exc}")
                        # A failed size may leave pods behind: clear the nodes for the next one.
                        lab.playbook("teardown.yml", check=False)
                        continue
                    sample["noop_s"] = noop_s
                    samples.setdefault(key, []).append(sample)
                    if progress:
                        progress(summarize(node_counts, pod_counts, samples, errors, skipped, verify_sample))
                    log(f"playbooks: {nodes} nodes x {pods} pods: deploy {sample['deploy_s']:.1f} s, "
                        f"rerun {sample['rerun_s']:.1f} s, teardown {sample['teardown_s']:.1f} s")
            finally:
                lab.stop()
        log(f"playbooks: repetition {rep + 1}/{reps} done")
    return summarize(node_counts, pod_counts, samples, errors, skipped, verify_sample)


def one(lab, nodes, pods, has_verify, verify_sample, verify_full_max_pairs, on_deployed=None):
    extra = {"flatnet_pods_per_node": pods}
    lab.pods_per_node = pods
    sample = {}
    sample["deploy_s"], _out = lab.playbook("site.yml", extra)
    sample["rerun_s"], out = lab.playbook("site.yml", extra)
    sample["rerun_changed"] = changed_count(out)
    if has_verify:
        # A failing verify keeps its time (and is reported); deploy and rerun still count.
        sample["verify_sampled_s"], out = lab.playbook("verify.yml", dict(extra, flatnet_verify_sample=verify_sample),
                                                       check=False)
        sample["verify_sampled_failed"] = _verify_failure(out)
        pairs = (nodes * pods) ** 2
        if pairs <= verify_full_max_pairs:
            sample["verify_full_s"], out = lab.playbook("verify.yml", extra, check=False)
            sample["verify_full_failed"] = _verify_failure(out)
    if on_deployed:
        on_deployed(lab)
    sample["teardown_s"], _out = lab.playbook("teardown.yml", extra)
    return sample


def _verify_failure(output):
    """None when verify.yml passed, else its failure message (e.g. how many checks failed)."""
    if RECAP.search(output) and not any(int(m.group(5)) for m in RECAP.finditer(output)):
        return None
    found = re.findall(r"(\d+ required checks failed \(\d+ run\))", output)
    return found[-1] if found else "verify.yml failed"


def summarize(node_counts, pod_counts, samples, errors, skipped, verify_sample):
    rows = []
    for nodes in node_counts:
        for pods in pod_counts:
            runs = samples.get((nodes, pods), [])
            row = {"nodes": nodes, "pods_per_node": pods, "runs": len(runs)}
            for key in ("noop_s", "deploy_s", "rerun_s", "teardown_s", "verify_sampled_s", "verify_full_s"):
                vals = [r[key] for r in runs if key in r]
                row[key] = median(vals) if vals else None
            row["rerun_changed"] = max((r["rerun_changed"] for r in runs), default=None)
            row["verify_failures"] = sorted({f"{kind}: {r[f'verify_{kind}_failed']}" for r in runs
                                             for kind in ("sampled", "full") if r.get(f"verify_{kind}_failed")})
            row["deploy_vs_noop"] = ratio(row["deploy_s"], row["noop_s"])
            row["rerun_vs_noop"] = ratio(row["rerun_s"], row["noop_s"])
            row["deploy_plus_verify_s"] = (row["deploy_s"] + row["verify_sampled_s"]
                                           if row["deploy_s"] is not None and row["verify_sampled_s"] is not None else None)
            rows.append(row)
    lookup = {(r["nodes"], r["pods_per_node"]): r for r in rows}
    small, big = min(pod_counts), max(pod_counts)
    for r in rows:
        base = lookup[(r["nodes"], small)]
        r["rerun_vs_rerun_1pod"] = ratio(r["rerun_s"], base["rerun_s"])
        # Paired per repetition too: both reruns ran on the same lab minutes apart.
    return {"node_counts": node_counts, "pod_counts": pod_counts, "rows": rows, "skipped": skipped,
            "errors": {f"{n}x{p}": e for (n, p), e in errors.items()}, "verify_sample": verify_sample,
            "rerun_big_vs_small": {n: ratio(lookup[(n, big)]["rerun_s"], lookup[(n, small)]["rerun_s"]) for n in node_counts},
            "raw": {f"{n}x{p}": v for (n, p), v in samples.items()}}


def report(result):
    rows = result["rows"]
    out = [table(
        "site.yml on the lab (seconds, medians; baseline: one-task playbook on the same lab)",
        ["nodes x pods", "baseline", "deploy", "rerun", "teardown", "deploy/base", "rerun/base",
         "rerun/rerun(1 pod)", "rerun changed"],
        [[f"{r['nodes']} x {r['pods_per_node']}", r["noop_s"], r["deploy_s"], r["rerun_s"], r["teardown_s"],
          r["deploy_vs_noop"], r["rerun_vs_noop"], r["rerun_vs_rerun_1pod"], fmt(r["rerun_changed"])] for r in rows])]
    if "verify" not in result["skipped"]:
        out.append(table(
            f"verify.yml (seconds, medians; sampled = flatnet_verify_sample: {result['verify_sample']})",
            ["nodes x pods", "pods total", "sampled", "full mesh", "deploy+verify(sampled)"],
            [[f"{r['nodes']} x {r['pods_per_node']}", str(r["nodes"] * r["pods_per_node"]), r["verify_sampled_s"],
              r["verify_full_s"], r["deploy_plus_verify_s"]] for r in rows]))
        out.append("full mesh verify is run only while (pods total)^2 is within --verify-full-max-pairs")
    for what, why in result["skipped"].items():
        out.append(f"not measured: {what}: {why}")
    for r in rows:
        for failure in r.get("verify_failures") or []:
            out.append(f"verify FAILED on {r['nodes']} x {r['pods_per_node']}: {failure}")
    for key, err in result["errors"].items():
        out.append(f"FAILED: {key}: {err}")
    return "\n\n".join(out)


def check_targets(result):
    checks = []
    if len(result["pod_counts"]) < 2:
        return checks
    for nodes, value in result["rerun_big_vs_small"].items():
        checks.append((f"rerun {max(result['pod_counts'])} pods/node <= 1.5x rerun {min(result['pod_counts'])} pod/node "
                       f"({nodes} nodes)", None if value is None else value <= 1.5, fmt(value)))
    lookup = {(r["nodes"], r["pods_per_node"]): r for r in result["rows"]}
    big = lookup.get((8, 100))
    if big:
        total = big["deploy_plus_verify_s"]
        checks.append(("8 x 100 deploy+verify < 300 s", None if total is None else total < 300, fmt(total)))
    for r in result["rows"]:
        if r.get("verify_failures"):
            checks.append((f"verify passes ({r['nodes']} x {r['pods_per_node']})", False, "; ".join(r["verify_failures"])))
        if r["rerun_changed"]:
            checks.append((f"rerun reports no change ({r['nodes']} x {r['pods_per_node']})", False,
                           f"changed={r['rerun_changed']}"))
    return checks


__all__ = ["measure", "report", "check_targets", "Skip"]
