# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure parts of the probe module: choosing the probes, reading the answers."""

from __future__ import annotations

from collections import Counter

import pytest

from ansible_collections.flatnet.cluster.plugins.modules import probe

TARGETS = [
    {"node": n, "pod": f"{n}-pod-{i}", "ip": f"10.244.{k}.{i + 1}"}
    for k, n in enumerate(["node1", "node2", "node3"]) for i in range(1, 5)
]
LOCAL = [{"name": f"node1-pod-{i}", "ips": [f"10.244.0.{i + 1}/24"]} for i in range(1, 5)]


def params(**kw):
    base = dict(node="node1", local_pods=LOCAL, targets=TARGETS, node_ips=["192.168.50.11", "10.244.0.1"],
                sample=None, seed="flatnet", checks=list(probe.CHECKS), mtu=None, mtu_targets=[], egress=None)
    base.update(kw)
    return base


def test_full_mesh_skips_only_self():
    pairs = probe.select_pairs(["node1-pod-1", "node1-pod-2"], TARGETS, "node1")
    assert len(pairs) == 2 * (len(TARGETS) - 1)
    assert ("node1-pod-1", ("node1", "node1-pod-1")) not in pairs
    assert ("node1-pod-1", ("node1", "node1-pod-2")) in pairs


def test_sample_covers_every_node_and_every_local_pod_and_is_deterministic():
    sources = [p["name"] for p in LOCAL]
    a = probe.select_pairs(sources, TARGETS, "node1", sample=3, seed="s")
    b = probe.select_pairs(sources, TARGETS, "node1", sample=3, seed="s")
    assert a == b
    # one same-node pair per source, whole rounds over the 2 other nodes until every source has
    # one (4 sources: 2 rounds), 3 random ones
    assert len(a) == len(sources) + 4 + 3
    assert len(set(a)) == len(a)
    assert {n for _src, (n, _p) in a} == {"node1", "node2", "node3"}
    for s in sources:
        assert (s, ("node1", s)) not in a
        assert any(n == "node1" for src, (n, _p) in a if src == s)   # the bridge path
        assert any(n != "node1" for src, (n, _p) in a if src == s)   # a path across nodes
    # every local pod is a same-node target
    assert {p for _src, (n, p) in a if n == "node1"} >= set(sources)
    other = probe.select_pairs(sources, TARGETS, "node2", sample=3, seed="s")
    assert other != a  # the seed is mixed with the node name
    assert probe.select_pairs(sources, TARGETS, "node1", sample=0, seed="s") == a[:-3]


def test_sample_grows_with_nodes_not_with_pods_times_nodes():
    nodes = [f"n{k:03d}" for k in range(100)]
    targets = [{"node": n, "pod": f"{n}-p{i}", "ip": f"10.{k // 250}.{k % 250}.{i + 2}"}
               for k, n in enumerate(nodes) for i in range(10)]
    sources = [f"n000-p{i}" for i in range(10)]
    pairs = probe.select_pairs(sources, targets, "n000", sample=10)
    assert len(pairs) == 10 + 99 + 10
    full = probe.select_pairs(sources, targets, "n000")
    assert len(full) == 10 * 999


@pytest.mark.parametrize("nodes,pods", [(12, 4), (3, 10), (2, 1), (5, 5)])
def test_sample_across_the_cluster_covers_every_node_pair_and_every_pod(nodes, pods):
    names = [f"node{k}" for k in range(nodes)]
    targets = [{"node": n, "pod": f"{n}-pod-{i}", "ip": f"10.244.{k}.{i + 2}"}
               for k, n in enumerate(names) for i in range(pods)]
    node_pairs, sources_far, targets_far, targets_near = set(), set(), set(), set()
    for n in names:
        mine = [t["pod"] for t in targets if t["node"] == n]
        for src, (dst_node, dst) in probe.select_pairs(mine, targets, n, sample=0):
            assert src != dst
            if dst_node == n:
                targets_near.add(dst)
            else:
                node_pairs.add((n, dst_node))
                sources_far.add(src)
                targets_far.add(dst)
    every_pod = {t["pod"] for t in targets}
    assert node_pairs == {(a, b) for a in names for b in names if a != b}
    assert sources_far == every_pod
    # with fewer other nodes than pods, the extra rounds still reach every pod
    assert targets_far == every_pod
    if pods > 1:
        assert targets_near == every_pod


def test_sample_larger_than_the_mesh_is_the_mesh():
    sources = ["node1-pod-1"]
    pairs = probe.select_pairs(sources, TARGETS, "node1", sample=1000)
    assert sorted(pairs) == sorted(probe.select_pairs(sources, TARGETS, "node1"))


def test_plan_full_mesh_counts():
    probes = probe.plan_probes(params())
    counts = Counter(p["check"] for p in probes)
    assert counts["pod-pod"] == 4 * 11 * 2           # 4 sources × 11 other pods × http+udp
    assert counts["node-pod-local"] == 4 * 2
    assert counts["node-pod-remote"] == 8 * 2
    assert counts["identity"] == 4
    assert "mtu" not in counts and "egress" not in counts
    local = [p for p in probes if p["check"] == "node-pod-local"]
    assert all(p["src"] == "host" and p["src_ip"] is None for p in local)
    assert local[0]["want"] == ["192.168.50.11", "10.244.0.1"]


def test_plan_with_sample_keeps_every_local_pod_for_the_host():
    probes = probe.plan_probes(params(sample=2))
    local = {p["dst"] for p in probes if p["check"] == "node-pod-local"}
    assert local == {p["name"] for p in LOCAL}
    remote_nodes = {p["dst_node"] for p in probes if p["check"] == "node-pod-remote"}
    assert remote_nodes == {"node2", "node3"}
    # 4 same-node pairs, max(2 other nodes, 4 sources) cross-node pairs, 2 random ones
    assert Counter(p["check"] for p in probes)["pod-pod"] == (4 + 4 + 2) * 2


def test_plan_matches_address_families():
    local = [{"name": "a", "ips": ["10.244.0.2/24"]}, {"name": "b", "ips": ["10.244.0.3/24", "fd00:10::3/64"]}]
    targets = [{"node": "n2", "pod": "c", "ip": "10.244.1.2"}, {"node": "n2", "pod": "c", "ip": "fd00:11::2"}]
    probes = probe.plan_probes(params(node="n1", local_pods=local, targets=targets, checks=["pod-pod"]))
    pairs = {(p["src"], p["src_ip"], p["dst_ip"]) for p in probes}
    assert pairs == {("a", "10.244.0.2", "10.244.1.2"), ("b", "10.244.0.3", "10.244.1.2"),
                     ("b", "fd00:10::3", "fd00:11::2")}


def test_plan_node_ips_are_filtered_by_family():
    targets = [{"node": "n1", "pod": "a", "ip": "fd00:10::2"}]
    probes = probe.plan_probes(params(node="n1", local_pods=[], targets=targets,
                                      node_ips=["192.168.50.11", "fd00:10::1/64"], checks=["node-pod-local"]))
    assert {tuple(p["want"]) for p in probes} == {("fd00:10::1",)}


def test_plan_mtu_and_egress():
    probes = probe.plan_probes(params(
        mtu=1450, mtu_targets=[{"node": "node2", "pod": "node2-pod-1", "ip": "10.244.1.2"}],
        egress={"ip": "203.0.113.10", "port": 8083, "expect_source": "192.168.50.11"},
        checks=["mtu", "egress"]))
    mtu = [p for p in probes if p["check"] == "mtu"]
    assert mtu == [dict(check="mtu", proto="udp", src_node="node1", src="node1-pod-1", src_ip="10.244.0.2",
                        dst_node="node2", dst="node2-pod-1", dst_ip="10.244.1.2", mtu=1450)]
    egress = [p for p in probes if p["check"] == "egress"]
    assert len(egress) == 4 and all(p["want"] == ["192.168.50.11"] and p["dst_node"] is None for p in egress)


def test_plan_identity_carries_the_mtu_only_with_the_mtu_check():
    ident = [p for p in probe.plan_probes(params(mtu=1450)) if p["check"] == "identity"]
    assert {p["mtu"] for p in ident} == {1450}
    ident = list(probe.plan_probes(params(mtu=1450, checks=["identity"])))
    assert {p["mtu"] for p in ident} == {None}


def test_plan_checks_option_limits_the_checks():
    assert {p["check"] for p in probe.plan_probes(params(checks=["identity"]))} == {"identity"}


@pytest.mark.parametrize("raw, ip", [
    ("10.244.0.2:43210", "10.244.0.2"), ("[fd00::2]:43210", "fd00::2"), ("10.244.0.2", "10.244.0.2"),
    ("fd00::2", "fd00::2"), (" 10.1.2.3:1\n", "10.1.2.3"),
])
def test_strip_port(raw, ip):
    assert probe.strip_port(raw) == ip


def test_plain_ip_unwraps_mapped_addresses():
    assert probe.plain_ip("::ffff:10.244.0.2") == "10.244.0.2"
    assert probe.plain_ip("fd00:0::2") == "fd00::2"
    assert probe.plain_ip("garbage") == "garbage"


def test_check_answer():
    assert probe.check_answer("p", "10.0.0.2", "p", ["10.0.0.2"]) == (True, "ok", None)
    assert probe.check_answer("q", "10.0.0.2", "p", ["10.0.0.2"])[1] == "wrong-pod"
    assert probe.check_answer("p", "192.168.50.11", "p", ["10.0.0.2"])[1] == "wrong-source"
    assert probe.check_answer("p", "::ffff:10.0.0.2", "p", ["10.0.0.2"])[0] is True
    assert probe.check_answer("p", "1.2.3.4", "p", [])[0] is True  # no expectation: any source


def test_compare_addrs():
    assert probe.compare_addrs(["10.244.0.2/24"], ["10.244.0.2/24"]) == ([], [])
    assert probe.compare_addrs(["10.244.0.2/24"], ["10.244.0.2/16"]) == (["10.244.0.2/24"], [])
    assert probe.compare_addrs(["10.244.0.2"], ["10.244.0.2/16"]) == ([], [])
    assert probe.compare_addrs(["10.244.0.2/24"], ["10.244.0.2/24", "10.244.0.9/24"]) == ([], ["10.244.0.9/24"])


def test_identity_result_from_read_addrs():
    pr = dict(check="identity", proto="addr", src_node="n", src="a", src_ip=None, dst_node="n", dst="a",
              dst_ip=None, want=["10.244.0.2/24"])
    good = probe.run_probe(pr, {}, lambda pod: (True, ["10.244.0.2/24"], 1500))
    assert (good["ok"], good["reason"]) == (True, "ok")
    down = probe.run_probe(pr, {}, lambda pod: (False, ["10.244.0.2/24"], 1500))
    assert (down["ok"], down["reason"], down["error"]) == (False, "bad-address", "eth0 is not up")
    wrong = probe.run_probe(pr, {}, lambda pod: (True, ["10.244.0.3/24"], 1500))
    assert wrong["error"] == "missing 10.244.0.2/24; unexpected 10.244.0.3/24"

    mtu = probe.run_probe(dict(pr, mtu=1450), {}, lambda pod: (True, ["10.244.0.2/24"], 1500))
    assert (mtu["ok"], mtu["reason"], mtu["error"]) == (False, "bad-mtu", "eth0 has MTU 1500, the plan says 1450")
    assert probe.run_probe(dict(pr, mtu=1450), {}, lambda pod: (True, ["10.244.0.2/24"], 1450))["ok"] is True

    def boom(pod):
        raise probe.ProbeError("bad-address", "pod a has no eth0")

    gone = probe.run_probe(pr, {}, boom)
    assert (gone["ok"], gone["reason"], gone["error"]) == (False, "bad-address", "pod a has no eth0")


def test_missing_namespace_is_a_result_not_a_crash():
    pr = dict(check="pod-pod", proto="http", src_node="n", src="no-such-pod-xyz", src_ip="10.0.0.2",
              dst_node="n", dst="b", dst_ip="10.0.0.3")
    r = probe.run_probe(pr, {"timeout": 0.2})
    assert r["ok"] is False and r["reason"] == "error" and "no network namespace" in r["error"]
    assert set(r) == {"check", "proto", "src_node", "src", "src_ip", "dst_node", "dst", "dst_ip",
                      "ok", "reason", "seen", "expected", "error", "seconds", "retried"}


def test_neighbour_table_fulls_from_ntable():
    # Recorded from `ip -s -json ntable show` (trimmed): one entry per table, then one per device.
    ntables = [
        {"family": "inet", "name": "arp_cache", "thresh3": 1024, "entries": 0, "table_fulls": 63790},
        {"family": "inet", "name": "arp_cache", "dev": "lo", "refcnt": 1},
        {"family": "inet6", "name": "ndisc_cache", "thresh3": 1024, "table_fulls": 2},
        {"family": "inet6", "name": "ndisc_cache", "dev": "eth0", "table_fulls": 99},
    ]
    assert probe.neighbour_table_fulls(ntables) == {4: 63790, 6: 2}
    assert probe.neighbour_table_fulls([]) == probe.neighbour_table_fulls(None) == {}


# --- retry of failed pairs (issue #16 item 5) ---------------------------------------------

def _res(ok, seconds, check="pod-pod"):
    return {"check": check, "ok": ok, "seconds": seconds}


def test_baseline_is_the_median_of_the_passes_only():
    results = [_res(True, 0.01), _res(True, 0.03), _res(True, 0.02), _res(False, 2.0),
               _res(True, 9.0, check="identity")]
    assert probe.baseline(results) == 0.02
    assert probe.baseline([_res(False, 2.0)]) is None


@pytest.mark.parametrize("timeout,base,factor,want", [
    (2.0, None, 10, 2.0),     # nothing passed: the configured timeout
    (2.0, 0.01, 10, 2.0),     # a quiet machine: never shorter than the configured timeout
    (2.0, 0.5, 10, 5.0),      # loaded: factor x baseline
    (2.0, 3.0, 10, 10.0),     # capped at RETRY_CAP x timeout
])
def test_retry_timeout(timeout, base, factor, want):
    assert probe.retry_timeout(timeout, base, factor) == want


def _fake_runner(monkeypatch, outcomes):
    """run_probe answering from ``outcomes[dst]`` (a list consumed per attempt); records timeouts."""
    seen = []

    def fake(p, params, _read=None):
        seen.append((p["dst"], params["timeout"]))
        ok = outcomes[p["dst"]].pop(0)
        return dict(p, ok=ok, reason="ok" if ok else "timeout", error=None if ok else "timed out",
                    seconds=0.5 if ok else params["timeout"], retried=False)
    monkeypatch.setattr(probe, "run_probe", fake)
    return seen


def test_a_failed_pair_is_retried_once_with_the_adapted_timeout(monkeypatch):
    seen = _fake_runner(monkeypatch, {"a": [True], "b": [False, True], "c": [False, False]})
    probes = [dict(check="pod-pod", proto="http", dst=d) for d in "abc"]
    hook = []
    results, info = probe.run_probes(probes, {"timeout": 1.0}, workers=2, retries=1, retry_factor=4,
                                     before_retry=lambda failed: hook.append(sorted(r["dst"] for r in failed)))
    assert hook == [["b", "c"]]
    assert sorted(seen) == [("a", 1.0), ("b", 1.0), ("b", 2.0), ("c", 1.0), ("c", 2.0)]
    a, b, c = results
    assert (a["ok"], a["retried"]) == (True, False)
    assert (b["ok"], b["retried"], b["first_reason"]) == (True, True, "timeout")
    assert (c["ok"], c["retried"]) == (False, True)  # failed twice: a failure
    assert info == {"baseline": 0.5, "timeout": 2.0, "retried": 2, "passed_on_retry": 1}


def test_no_retry_when_disabled_or_nothing_failed(monkeypatch):
    seen = _fake_runner(monkeypatch, {"a": [True], "b": [False]})
    probes = [dict(check="pod-pod", proto="http", dst=d) for d in "ab"]
    results, info = probe.run_probes(probes, {"timeout": 1.0}, retries=0)
    assert len(seen) == 2 and not results[1]["ok"] and not results[1]["retried"]
    assert info["retried"] == 0


@pytest.mark.parametrize("line,problem", [
    ("node1 pod1", "is not 'NODE POD IP'"),
    ("node1 pod1 10.0.0.1 extra", "is not 'NODE POD IP'"),
    ("", "is not 'NODE POD IP'"),
    ("node1 pod1 10.0.0.300", "is not an IP address"),
    ("node1 pod1 10.0.0.1/24", "is not an IP address"),
])
def test_target_lines_refuse_a_bad_line_by_name(line, problem):
    with pytest.raises(ValueError, match=problem):
        probe.parse_target_lines(["node1 pod0 10.0.0.2", line])


def test_target_lines_parse_into_targets():
    assert probe.parse_target_lines(["node1 pod-1 10.244.0.2", " node2  pod-2 fd00::2 "]) == [
        {"node": "node1", "pod": "pod-1", "ip": "10.244.0.2"},
        {"node": "node2", "pod": "pod-2", "ip": "fd00::2"}]
