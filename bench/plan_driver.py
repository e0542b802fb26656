# SPDX-License-Identifier: GPL-3.0-or-later
"""Build one flatnet plan of N nodes in a fresh interpreter and print its figures as JSON.

    python plan_driver.py COLLECTIONS_ROOT NODES PODS_PER_NODE PLAN_FILE [--rerun]

Nodes sit 250 to an underlay /24 (backend auto: direct inside a subnet, VXLAN across). The
plan is written to PLAN_FILE as the plan action writes it; with --rerun that file is read
first and passed as the cached plan, as on a second ansible-playbook run (a process of its
own, like every run).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main():
    root, nodes, pods, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rerun = "--rerun" in sys.argv[5:]
    sys.path.insert(0, root)
    from ansible_collections.flatnet.cluster.plugins.plugin_utils.cluster_plan import build_plan, plan_json

    request = {}
    for i in range(nodes):
        subnet = i // 250
        network = f"10.{100 + subnet // 250}.{subnet % 250}.0/24"
        request[f"node{i:05d}"] = {
            "underlay": {"interface": "eth0", "ip": f"10.{100 + subnet // 250}.{subnet % 250}.{i % 250 + 1}",
                         "prefix": 24, "network": network, "mtu": 1500},
            "recorded": {}, "pod_cidr": None, "pods": [], "pods_per_node": pods,
        }
    cached = None
    if rerun:
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
    start, cpu = time.perf_counter(), time.process_time()
    plan = build_plan(request, cluster_cidr="100.64.0.0/10", node_prefix=24, backend="auto", cached=cached)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    text = plan_json(plan)
    if rerun:
        with open(path, encoding="utf-8") as f:
            assert f.read() == text, "a rerun with the cached plan changed it"
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    print(json.dumps({"nodes": nodes, "pods_per_node": pods, "seconds": seconds, "cpu_seconds": cpu,
                      "plan_bytes": len(text.encode()),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
