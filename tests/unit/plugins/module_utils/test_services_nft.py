# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import services_nft as r


def svc(name="web", ip="10.96.0.5", eps=("10.244.0.2",), **kw):
    out = {"name": name, "namespace": "default", "type": "ClusterIP", "cluster_ip": ip,
           "ports": [{"name": "http", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": None}],
           "session_affinity": "None", "session_affinity_timeout": 10800, "external_traffic_policy": "Cluster",
           "endpoints": [{"ip": e, "node": "node1", "pod": f"p{i}"} for i, e in enumerate(eps)]}
    out.update(kw)
    return out


def render(services, node="node1"):
    return r.render(services, ["10.96.0.0/12"], ["10.244.0.0/16"], node)


def test_shape_and_numeric_priorities():
    text = render([svc(eps=("10.244.0.2", "10.244.1.2"))])
    assert text.startswith("table ip flatnet-svc {\n\tcomment \"flatnet.cluster services\"\n")
    assert "10.96.0.5 . tcp . 80 : goto svc-" in text
    # No affinity: one rule, no chain per endpoint; hairpin found in postrouting by a set.
    assert "meta l4proto tcp dnat to numgen random mod 2 map { 0 : 10.244.0.2, 1 : 10.244.1.2 } : 8080" in text
    assert "ep-" not in text and "aff-" not in text
    assert "ip saddr . ip daddr @hairpin jump mark-for-masquerade" in text
    assert "elements = { 10.244.0.2 . 10.244.0.2, 10.244.1.2 . 10.244.1.2 }" in text
    assert "elements = { 10.244.0.2 . tcp . 8080, 10.244.1.2 . tcp . 8080 }" in text
    single = render([svc()])
    assert "meta l4proto tcp dnat to 10.244.0.2:8080" in single and "numgen" not in single
    for hook in ("prerouting", "output", "postrouting", "forward", "input"):
        for line in text.splitlines():
            if f"hook {hook} priority" in line:
                assert any(ch.isdigit() for ch in line.split("priority")[1]), line
    assert "dstnat" not in text and "srcnat" not in text


def test_deterministic_and_order_free():
    a = render([svc("a", "10.96.0.5"), svc("b", "10.96.0.6")])
    b = render([svc("b", "10.96.0.6"), svc("a", "10.96.0.5")])
    assert a == b


def test_no_endpoints_rejected_and_node_port_too():
    text = render([svc(eps=(), type="NodePort",
                       ports=[{"name": None, "port": 80, "target_port": 80, "protocol": "udp", "node_port": 30001}])])
    assert "10.96.0.5 . udp . 80 : goto reject-chain" in text
    assert "udp . 30001 : goto reject-chain" in text
    assert "svc-" not in text


def test_affinity_sets_and_checks():
    text = render([svc(eps=("10.244.0.2", "10.244.0.3"), session_affinity="ClientIP", session_affinity_timeout=60)])
    assert text.count("flags dynamic,timeout") == 2 and "timeout 60s" in text
    assert text.count("update @aff-") == 2
    assert text.count("ip saddr @aff-") == 2
    assert "numgen random mod 2 vmap { 0 : goto ep-" in text


@pytest.mark.parametrize("policy,expect,absent", [
    ("Cluster", ["ip saddr != { 10.244.0.0/16 } jump mark-for-masquerade"], ["\t\tdrop\n"]),
    ("Local", ["fib saddr type local jump mark-for-masquerade", "ip saddr { 10.244.0.0/16 } goto svc-"], []),
])
def test_node_port_policies(policy, expect, absent):
    text = render([svc(type="NodePort", external_traffic_policy=policy,
                       ports=[{"name": None, "port": 80, "target_port": 80, "protocol": "tcp", "node_port": 30001}])])
    assert "tcp . 30001 : goto ext-" in text
    for item in expect:
        assert item in text
    for item in absent:
        assert item not in text


def test_local_policy_without_local_endpoint_drops():
    text = render([svc(type="NodePort", external_traffic_policy="Local",
                       ports=[{"name": None, "port": 80, "target_port": 80, "protocol": "tcp", "node_port": 30001}])],
                  node="node2")
    assert "\t\tdrop\n" in text


@pytest.mark.parametrize("bad", [{"cluster_ip": "banana"}, {"ports": [{"port": 1, "target_port": 1, "protocol": "icmp"}]}])
def test_bad_input_raises(bad):
    with pytest.raises((ValueError, KeyError)):
        render([svc(**bad)])


def test_no_ipv4_service_range():
    with pytest.raises(ValueError, match="no IPv4"):
        r.render([], ["fd00::/108"], [], None)


def parts(services, node="node1"):
    return r.plan(services, ["10.96.0.0/12"], ["10.244.0.0/16"], node)


def test_delta_nothing_changed_is_empty():
    a = parts([svc("a", "10.96.0.5"), svc("b", "10.96.0.6")])
    script, stale, counts = r.delta(r.summary(a), a, {})
    assert script == "" and stale == {"chains": [], "sets": []} and counts == {"chains": 0, "elements": 0}


def test_delta_touches_only_the_changed_service():
    old = parts([svc("a", "10.96.0.5", session_affinity="ClientIP"), svc("b", "10.96.0.6")])
    new = parts([svc("a", "10.96.0.5", session_affinity="ClientIP"), svc("b", "10.96.0.6", eps=("10.244.0.9",))])
    script, stale, _counts = r.delta(r.summary(old), new, {})
    chain_b = [n for n in new["chains"] if new["chains"][n][0].startswith("default/b")][0]
    assert f"flush chain ip flatnet-svc {chain_b}\n" in script
    assert f"add rule ip flatnet-svc {chain_b} meta l4proto tcp dnat to 10.244.0.9:8080" in script
    assert "delete element ip flatnet-svc endpoints { 10.244.0.2 . tcp . 8080 }" not in script  # a still uses it
    assert "add element ip flatnet-svc endpoints { 10.244.0.9 . tcp . 8080 }" in script
    # Service a (with its affinity set) is not touched at all.
    assert "aff-" not in script and "default/a" not in script and "delete table" not in script
    assert stale == {"chains": [], "sets": []}


def test_delta_removed_service_is_flushed_now_and_deleted_by_the_next_write():
    old = parts([svc("a", "10.96.0.5", session_affinity="ClientIP", eps=("10.244.0.2", "10.244.0.3"))])
    new = parts([])
    script, stale, _counts = r.delta(r.summary(old), new, {})
    assert "delete element ip flatnet-svc service-ips { 10.96.0.5 . tcp . 80 }" in script
    assert "delete chain" not in script and "delete set" not in script
    assert sorted(stale["chains"]) == sorted(old["chains"]) and sorted(stale["sets"]) == sorted(old["sets"])
    assert all(f"flush chain ip flatnet-svc {name}\n" in script for name in old["chains"])
    later = parts([svc("c", "10.96.0.7")])
    script, stale2, _counts = r.delta(r.summary(new), later, stale)
    assert all(f"delete chain ip flatnet-svc {name}\n" in script for name in old["chains"])
    assert all(f"delete set ip flatnet-svc {name}\n" in script for name in old["sets"])
    assert stale2 == {"chains": [], "sets": []}
    # Deletions come before the new service's chain is made.
    assert script.index("delete chain") < script.index("add chain")


def test_delta_node_port_moving_between_services_replaces_the_element():
    np = [{"name": None, "port": 80, "target_port": 80, "protocol": "tcp", "node_port": 30001}]
    old = parts([svc("a", "10.96.0.5", type="NodePort", ports=np)])
    new = parts([svc("b", "10.96.0.6", type="NodePort", ports=np)])
    script, _stale, _counts = r.delta(r.summary(old), new, {})
    assert "delete element ip flatnet-svc service-nodeports { tcp . 30001 }" in script
    assert script.index("delete element ip flatnet-svc service-nodeports") < \
        script.index("add element ip flatnet-svc service-nodeports")


def test_definition_is_render():
    services = [svc("a", "10.96.0.5"), svc("b", "10.96.0.6", eps=())]
    assert r.definition(parts(services)) == render(services)
    assert r.static_definition().count("\tchain ") == 12


def test_without_affinity_elements():
    listing = ("table ip flatnet-svc {\n\tset aff-1 {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n"
               "\t\ttimeout 1m\n\t\telements = { 10.244.0.2 expires 59s,\n\t\t\t     10.244.0.3 expires 3s }\n\t}\n"
               "\tset aff-2 {\n\t\ttype ipv4_addr\n\t\telements = { 10.244.0.9 expires 1s }\n\t}\n"
               "\tset endpoints {\n\t\ttype ipv4_addr\n\t\telements = { 10.244.0.2 }\n\t}\n}\n")
    out = r.without_affinity_elements(listing)
    assert "expires" not in out and "elements = { 10.244.0.2 }" in out
    assert out.count("\t}\n") == 3 and "timeout 1m" in out
