# SPDX-License-Identifier: GPL-3.0-or-later
"""Containers in verification results: relabelled checks and names, CHECK results, required checks."""
from __future__ import annotations

from ansible_collections.flatnet.cluster.plugins.filter import cni_label_results as f
from ansible_collections.flatnet.cluster.plugins.plugin_utils import report

CONTAINERS = [{"node": "node1", "netns": "netns-aaa", "container_id": "0123456789abcdef", "ip": "10.244.0.128"},
              {"node": "node2", "netns": "netns-bbb", "container_id": "fedcba9876543210", "ip": "10.244.1.128"}]


def r(check, src, dst, **kw):
    return dict({"check": check, "proto": "http", "src_node": "node1", "src": src, "dst_node": "node2", "dst": dst,
                 "ok": True}, **kw)


def test_labels():
    out = f.cni_label_results([
        r("pod-pod", "node1-pod-1", "node2-pod-1"),
        r("pod-pod", "node1-pod-1", "netns-bbb", seen="netns-bbb", expected="netns-bbb"),
        r("pod-pod", "netns-aaa", "node2-pod-1"),
        r("pod-pod", "netns-aaa", "netns-bbb"),
        r("node-pod-local", "host", "netns-aaa"),
        r("node-pod-remote", "host", "netns-bbb"),
        r("node-pod-remote", "host", "node2-pod-1"),
        r("identity", "netns-aaa", "netns-aaa"),
    ], CONTAINERS)
    assert [x["check"] for x in out] == ["pod-pod", "pod-container", "pod-container", "container-container",
                                         "node-container-local", "node-container-remote", "node-pod-remote",
                                         "identity"]
    assert out[1]["dst"] == "container:fedcba987654" and out[1]["seen"] == "container:fedcba987654"
    assert out[3]["src"] == "container:0123456789ab"
    assert out[0]["src"] == "node1-pod-1"


def test_check_results_and_report():
    checks = [{"container_id": "0123456789abcdef", "ip": "10.244.0.128", "ok": True},
              {"container_id": "ffff", "ip": "10.244.0.129", "ok": False, "msg": "bridge: boom"}]
    res = f.cni_check_results(checks, "node1")
    assert [(x["check"], x["ok"], x["error"]) for x in res] == [
        ("cni-check", True, None), ("cni-check", False, "bridge: boom")]
    required = f.cni_required_checks(["pod-pod", "node-pod-local"])
    assert required == ["pod-pod", "node-pod-local", "pod-container", "container-container",
                        "node-container-local", "cni-check"]
    assert set(required) <= set(report.CHECKS)
    built = report.build(res, required)
    assert not built["ok"] and built["by_check"]["cni-check"]["failed"] == 1
