# SPDX-License-Identifier: GPL-3.0-or-later
"""The verification report, built from synthetic probe results."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.flatnet.cluster.plugins.plugin_utils import report as rpt

PLAN = {
    "backend": "auto",
    "cluster_cidrs": ["10.244.0.0/16"],
    "vxlan": {"device": "flatnet.1"},
    # node1 and node2 share a subnet (direct), node3 is behind the router (vxlan).
    "nodes": {
        "node1": {"underlay": {"ip": "192.168.50.11", "network": "192.168.50.0/24"}},
        "node2": {"underlay": {"ip": "192.168.50.12", "network": "192.168.50.0/24"}},
        "node3": {"underlay": {"ip": "192.168.60.11", "network": "192.168.60.0/24"}},
    },
}


def test_peer_mode_comes_from_the_plan():
    assert rpt.peer_mode(PLAN, "node1", "node2") == "direct"
    assert rpt.peer_mode(PLAN, "node3", "node1") == "vxlan"
    assert rpt.peer_mode(PLAN, "node1", "node1") == "local"
    assert rpt.peer_mode(PLAN, "node1", "ghost") is None


def res(check="pod-pod", proto="http", src_node="node1", src="node1-pod-1", dst_node="node2",
        dst="node2-pod-1", ok=True, reason=None, src_ip="10.244.0.2", dst_ip="10.244.1.2", **kw):
    r = dict(check=check, proto=proto, src_node=src_node, src=src, src_ip=src_ip, dst_node=dst_node,
             dst=dst, dst_ip=dst_ip, ok=ok, reason=reason or ("ok" if ok else "timeout"),
             seen=kw.pop("seen", None), expected=kw.pop("expected", None), error=kw.pop("error", None))
    r.update(kw)
    return r


def test_flatten_accepts_the_shapes_a_playbook_hands_over():
    a, b = res(), res(src_node="node2")
    assert rpt.flatten([[a], [b]]) == rpt.flatten([a, b]) == rpt.flatten({"n2": [b], "n1": [a]})
    assert rpt.flatten([{"results": [a]}, None]) == rpt.flatten([a])
    assert rpt.flatten(None) == []
    with pytest.raises(rpt.ReportError):
        rpt.flatten(["nope"])
    with pytest.raises(rpt.ReportError):
        rpt.flatten([{"ok": True}])


def test_all_passing_report():
    results = [res(), res(proto="udp"), res(dst_node="node1", dst="node1-pod-2", dst_ip="10.244.0.3")]
    report = rpt.build(results, plan=PLAN)
    assert report["ok"] is True
    assert report["summary"] == {"total": 3, "passed": 3, "failed": 0, "failed_required": 0,
                                 "passed_on_retry": 0, "skipped": 0}
    assert report["matrix"]["node1"]["node2"] == {"total": 2, "passed": 2}
    assert report["matrix"]["node1"]["node1"] == {"total": 1, "passed": 1}
    assert report["failures"] == []
    text = rpt.render_text(report)
    assert text.startswith("flatnet verification: PASS - 3/3")
    assert "failures:" not in text


def test_matrix_counts_each_pair_of_nodes():
    results = [res(), res(ok=False), res(src_node="node2", dst_node="node1", ok=True)]
    m = rpt.build(results)["matrix"]
    assert m == {"node1": {"node2": {"total": 2, "passed": 1}}, "node2": {"node1": {"total": 1, "passed": 1}}}
    text = rpt.render_text(rpt.build(results))
    assert "1/2 !" in text


def test_host_gw_timeout_points_at_the_route():
    report = rpt.build([res(ok=False, reason="timeout", error="timed out")], plan=PLAN)
    assert report["ok"] is False
    (f,) = report["failures"]
    assert f["pair"] == "node1/node1-pod-1 (10.244.0.2) -> node2/node2-pod-1 (10.244.1.2)"
    assert "host-gw" in f["cause"]
    assert "on node1: ip route get 10.244.1.2 from 10.244.0.2 iif cni0" in f["commands"]
    assert not any("fdb" in c for c in f["commands"])


def test_vxlan_timeout_points_at_neighbour_and_fdb():
    (f,) = rpt.build([res(dst_node="node3", dst="node3-pod-1", dst_ip="10.244.2.2", ok=False)],
                     plan=PLAN)["failures"]
    assert "VXLAN" in f["cause"]
    assert "on node1: ip neigh show dev flatnet.1" in f["commands"]
    assert "on node1: bridge fdb show dev flatnet.1" in f["commands"]


def test_without_plan_both_backends_are_suggested():
    (f,) = rpt.build([res(ok=False)])["failures"]
    assert any("ip route get" in c for c in f["commands"]) and any("fdb" in c for c in f["commands"])


def test_host_source_uses_the_underlay_ip_of_the_plan():
    plan = {"backend": "host-gw", "nodes": {
        "node1": {"underlay": {"ip": "192.168.50.11", "network": "192.168.50.0/24"}},
        "node2": {"underlay": {"ip": "192.168.50.12", "network": "192.168.50.0/24"}}}}
    (f,) = rpt.build([res(check="node-pod-remote", src="host", src_ip=None, ok=False)], plan=plan)["failures"]
    assert "on node2: ip route get 192.168.50.11" in f["commands"]


def test_same_node_failure_blames_the_bridge():
    (f,) = rpt.build([res(dst_node="node1", dst="node1-pod-2", ok=False)], bridge="br9")["failures"]
    assert "bridge br9" in f["cause"]
    (g,) = rpt.build([res(check="node-pod-local", src="host", src_ip=None, dst_node="node1",
                          ok=False)])["failures"]
    assert "gateway" in g["cause"] and "on node1: ip addr show dev cni0" in g["commands"]


@pytest.mark.parametrize("reason, check, needle, command", [
    ("wrong-source", "pod-pod", "NAT", "nft list table inet flatnet"),
    ("wrong-source", "egress", "masquerade", "nft list table inet flatnet"),
    ("wrong-source", "node-pod-remote", "not its own", "ip route get 10.244.1.2"),
    ("wrong-pod", "pod-pod", "duplicate", "ip -n node2-pod-1 addr show dev eth0"),
    ("refused", "pod-pod", "probe agent", "ip netns pids node2-pod-1"),
    ("mtu-too-small", "mtu", "VXLAN overhead", "ip -n node1-pod-1 link show dev eth0"),
    ("mtu-not-enforced", "mtu", "planned MTU", "ip -n node1-pod-1 link show dev eth0"),
    ("bad-address", "identity", "planned addresses", "ip -n node1-pod-1 addr show dev eth0"),
    ("bad-mtu", "identity", "another MTU", "ip -n node1-pod-1 link show dev eth0"),
])
def test_each_failure_kind_has_a_cause_and_a_command(reason, check, needle, command):
    (f,) = rpt.build([res(check=check, ok=False, reason=reason)], plan=PLAN)["failures"]
    assert needle in f["cause"]
    assert any(c.endswith(command) for c in f["commands"]), f["commands"]


def test_not_required_checks_do_not_fail_the_report():
    results = [res(), res(check="egress", dst_node=None, dst="outside", ok=False, reason="wrong-source")]
    report = rpt.build(results, required_checks=["pod-pod"])
    assert report["ok"] is True
    assert report["summary"]["failed"] == 1 and report["summary"]["failed_required"] == 0
    assert report["by_check"]["egress"]["required"] is False
    assert "[not required]" in rpt.render_text(report)
    # egress has no destination node: it stays out of the matrix
    assert report["matrix"] == {"node1": {"node2": {"total": 1, "passed": 1}}}


def test_text_lists_seen_expected_and_commands():
    r = res(ok=False, reason="wrong-pod", seen="node2-pod-9 from 10.244.0.2",
            expected="node2-pod-1 from 10.244.0.2", error="answered by 'node2-pod-9'")
    text = rpt.render_text(rpt.build([r], plan=PLAN))
    assert "FAIL" in text.splitlines()[0]
    assert "seen:     node2-pod-9 from 10.244.0.2" in text
    assert "expected: node2-pod-1 from 10.244.0.2" in text
    assert "inspect:  on node2: ip -n node2-pod-1 addr show dev eth0" in text


def test_text_groups_failures_of_the_same_kind_and_pair():
    results = [res(ok=False, dst=f"node2-pod-{i}", dst_ip=f"10.244.1.{i + 2}") for i in range(7)]
    results.append(res(ok=False, dst_node="node3", dst="node3-pod-1", reason="refused"))
    text = rpt.render_text(rpt.build(results, plan=PLAN))
    assert "failures (8, in 2 groups" in text
    assert "- pod-pod node1 -> node2: timeout (7 probes)" in text
    assert "- pod-pod node1 -> node3: refused (1 probe)" in text
    assert "... and 2 more" in text
    assert text.count("likely:") == 2


def test_text_caps_the_groups_shown():
    results = [res(ok=False, dst_node=f"n{i}") for i in range(5)]
    text = rpt.render_text(rpt.build(results), max_failures=2)
    assert "and 3 more groups of failures" in text


def test_checks_are_listed_in_model_order():
    results = [res(check="identity", dst_node="node1"), res(check="mtu", proto="udp"), res()]
    assert list(rpt.build(results)["by_check"]) == ["pod-pod", "mtu", "identity"]


def test_json_round_trips():
    report = rpt.build([res(), res(ok=False)], plan=PLAN)
    assert json.loads(rpt.to_json(report)) == json.loads(json.dumps(report))


def test_junit_has_a_suite_per_check_and_the_failures():
    results = [res(), res(proto="udp", ok=False, error="timed out"),
               res(check="mtu", proto="udp", ok=False, reason="mtu-too-small")]
    xml = rpt.to_junit(rpt.build(results, plan=PLAN))
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(xml.split("\n", 1)[1])
    assert root.get("tests") == "3" and root.get("failures") == "2"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"flatnet.pod-pod", "flatnet.mtu"}
    assert suites["flatnet.pod-pod"].get("tests") == "2" and suites["flatnet.pod-pod"].get("failures") == "1"
    fail = suites["flatnet.mtu"].find("testcase/failure")
    assert fail.get("type") == "mtu-too-small"
    assert "VXLAN overhead" in fail.text


def test_empty_results_report_is_not_ok_by_itself_but_builds():
    report = rpt.build([])
    assert report["summary"]["total"] == 0 and report["ok"] is True
    assert rpt.render_text(report).startswith("flatnet verification: PASS - 0/0")


def test_neighbour_overflow_is_reported_first_with_the_fix():
    results = [res(ok=False), res()]
    fulls = {"node1": {"ipv4": 1360, "ipv6": 0}, "node2": {"ipv4": 1200}, "node3": {"ipv4": 0}}
    report = rpt.build(results, table_fulls=fulls)
    # Max, not sum: the lab's nodes share one kernel, so each of them sees the same counter.
    assert report["neighbour_overflow"] == {"refused": {"ipv4": 1360}, "nodes": ["node1", "node2"]}
    lines = rpt.render_text(report).splitlines()
    assert lines[1].startswith("WARNING: the kernel's neighbour table was full while probing")
    assert "1360 new IPv4 neighbour entries on node1, node2" in lines[1]
    assert "gc_thresh3" in lines[1]
    json.loads(rpt.to_json(report))


def test_no_overflow_no_warning():
    for fulls in (None, {}, {"node1": {"ipv4": 0, "ipv6": 0}}, {"node1": None}):
        report = rpt.build([res()], table_fulls=fulls)
        assert report["neighbour_overflow"] is None
        assert "WARNING" not in rpt.render_text(report)


# --- passed on retry and skipped checks ------------------------------------------------------

def test_a_pass_on_retry_is_counted_and_marked_everywhere():
    results = [res(), res(proto="udp", retried=True, first_reason="timeout", first_error="timed out"),
               res(src_node="node2", ok=False, retried=True, first_reason="timeout")]
    report = rpt.build(results, plan=PLAN)
    s = report["summary"]
    assert (s["total"], s["passed"], s["failed"], s["passed_on_retry"]) == (3, 2, 1, 1)
    assert report["by_check"]["pod-pod"]["passed_on_retry"] == 1
    assert [r["proto"] for r in report["passed_on_retry"]] == ["udp"]  # failed twice: a failure, not here
    assert report["ok"] is False and report["failures"][0]["src_node"] == "node2"
    text = rpt.render_text(report)
    assert "1 passed on retry" in text.splitlines()[0]
    assert "(1 on retry)" in text
    assert "passed on retry (1" in text and "first timeout (timed out)" in text
    data = json.loads(rpt.to_json(report))
    assert data["summary"]["passed_on_retry"] == 1
    assert [r["retried"] for r in data["results"]] == [False, True, True]
    root = ET.fromstring(rpt.to_junit(report))
    marked = [c for c in root.iter("testcase")
              if any(p.get("name") == "passed_on_retry" for p in c.iter("property"))]
    assert len(marked) == 1 and marked[0].find("failure") is None
    assert "first attempt: timeout" in marked[0].find("system-out").text


def test_a_skipped_check_is_neither_passed_nor_failed():
    results = [res(), res(check="service", proto="nodeport", src_node="node1", src="outside", dst_node=None,
                          dst="nodeports", ok=False, skipped=True, error="no place outside the cluster")]
    report = rpt.build(results, plan=PLAN)
    s = report["summary"]
    assert (s["total"], s["passed"], s["failed"], s["skipped"]) == (2, 1, 0, 1)
    assert report["ok"] is True and report["failures"] == []
    assert report["by_check"]["service"] == {"total": 1, "passed": 0, "failed": 0, "required": True,
                                             "passed_on_retry": 0, "skipped": 1}
    text = rpt.render_text(report)
    assert "1 skipped" in text.splitlines()[0] and "no place outside the cluster" in text
    root = ET.fromstring(rpt.to_junit(report))
    suite = next(s for s in root.iter("testsuite") if s.get("name") == "flatnet.service")
    assert suite.get("skipped") == "1" and suite.find("testcase/skipped") is not None


def test_a_failed_node_port_is_diagnosed_as_such():
    r = res(check="nodeport", proto="tcp", src_node="outside", src="lab-out", src_ip="203.0.113.10",
            dst_node="node2", dst="default/np:30083", dst_ip="192.168.50.12", ok=False, reason="error")
    report = rpt.build([r], plan=PLAN)
    cause, commands = report["failures"][0]["cause"], report["failures"][0]["commands"]
    assert "node port default/np:30083 of node2" in cause
    assert "on node2: nft list table ip flatnet-svc" in commands
    assert report["matrix"]["outside"]["node2"] == {"total": 1, "passed": 0}


def test_a_big_cluster_lists_failed_node_pairs_instead_of_the_grid():
    names = [f"n{k:02d}" for k in range(rpt.MATRIX_MAX_NODES + 4)]
    results = [res(src_node=a, src=f"{a}-p", dst_node=b, dst=f"{b}-p") for a in names for b in names]
    results.append(res(src_node="n03", src="n03-p", dst_node="n07", dst="n07-p", ok=False))
    text = rpt.render_text(rpt.build(results))
    assert "matrix (passed/total" not in text
    assert f"matrix: {len(names)} nodes, {len(names) ** 2} node pairs probed, 1 with failures" in text
    assert "  n03 -> n07: 1/2 passed" in text
    small = rpt.render_text(rpt.build(results[:4]))
    assert "matrix (passed/total, row = source node, column = destination node):" in small
