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
    assert "numgen random mod 2 vmap { 0 : goto ep-" in text
    assert "meta l4proto tcp dnat to 10.244.1.2:8080" in text
    assert "ip saddr 10.244.0.2 jump mark-for-masquerade" in text
    assert "elements = { 10.244.0.2 . tcp . 8080, 10.244.1.2 . tcp . 8080 }" in text
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
