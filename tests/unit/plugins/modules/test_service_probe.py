# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import itertools

import pytest

from ansible_collections.flatnet.cluster.plugins.modules import service_probe as sp

PARAMS = {"node": "node1", "timeout": 1.0, "http_port": 8083}


def svc(eps=("a", "b"), affinity="None", target=8083):
    return {"name": "web", "namespace": "default", "cluster_ip": "10.96.0.1", "session_affinity": affinity,
            "ports": [{"port": 80, "target_port": target, "protocol": "tcp"}],
            "endpoints": [{"pod": p, "ip": f"10.244.0.{i + 2}", "node": "node1"} for i, p in enumerate(eps)]}


def fake_get(answers):
    it = itertools.cycle(answers)

    def get(_ns, _ip, _port, _timeout):
        return next(it)
    return get


@pytest.mark.parametrize("answers,src,ok_tcp,ok_eps", [
    ([({"name": "a", "client_ip": "10.244.0.9"}, None, 0.01), ({"name": "b", "client_ip": "10.244.0.9"}, None, 0.01)],
     "c", True, True),
    ([({"name": "a", "client_ip": "10.244.0.9"}, None, 0.01)], "c", True, False),          # b never reached
    ([({"name": "a", "client_ip": "10.244.0.1"}, None, 0.01)], "c", False, False),         # masqueraded
    ([({"name": "a", "client_ip": "10.244.0.1"}, None, 0.01),
      ({"name": "b", "client_ip": "10.244.0.2"}, None, 0.01)], "a", True, True),           # hairpin masqueraded
    ([({"name": "a", "client_ip": "10.244.0.2"}, None, 0.01)], "a", False, False),         # hairpin not masqueraded
    ([(None, "timeout", 1.0)], "c", False, False),
])
def test_tcp_and_endpoint_sweep(monkeypatch, answers, src, ok_tcp, ok_eps):
    monkeypatch.setattr(sp, "_get", fake_get(answers))
    src_ip = "10.244.0.2" if src == "a" else "10.244.0.9"
    out = sp.check_service(PARAMS, svc(), svc()["ports"][0], src, src, src_ip, True)
    assert [(r["proto"], r["ok"]) for r in out] == [("tcp", ok_tcp), ("endpoints", ok_eps)]
    assert all(r["check"] == "service" and r["dst"] == "default/web:80" for r in out)


@pytest.mark.parametrize("answer,ok", [((None, "refused", 0.01), True), ((None, "refused", 1.5), False),
                                       ((None, "timeout", 3.0), False), (({"name": "x"}, None, 0.01), False)])
def test_reject(monkeypatch, answer, ok):
    monkeypatch.setattr(sp, "_get", fake_get([answer]))
    out = sp.check_service(PARAMS, svc(eps=()), svc()["ports"][0], "c", "c", "10.244.0.9", False)
    assert [(r["proto"], r["ok"]) for r in out] == [("reject", ok)]


def test_affinity(monkeypatch):
    monkeypatch.setattr(sp, "_get", fake_get([({"name": "a", "client_ip": "10.244.0.9"}, None, 0.01),
                                              ({"name": "b", "client_ip": "10.244.0.9"}, None, 0.01)]))
    out = sp.check_service(PARAMS, svc(affinity="ClientIP"), svc()["ports"][0], "c", "c", "10.244.0.9", False)
    assert [(r["proto"], r["ok"]) for r in out] == [("tcp", True), ("affinity", False)]


def test_other_target_ports_are_left_alone(monkeypatch):
    monkeypatch.setattr(sp, "_get", None)
    assert sp.check_service(PARAMS, svc(target=8080), svc(target=8080)["ports"][0], "c", "c", "x", True) == []


def test_resolve_follows_search_list_and_ndots(tmp_path, monkeypatch):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"
                    "nameserver 10.96.0.10\noptions ndots:5\n")
    asked = []

    def query(_ns, server, name, _timeout):
        asked.append((server, name))
        return ["10.96.0.1"] if name == "web.default.svc.cluster.local" else []
    monkeypatch.setattr(sp, "_dns_query", query)
    assert sp.resolve("p", str(conf), "web", 1.0) == "10.96.0.1"
    assert asked == [("10.96.0.10", "web.default.svc.cluster.local")]
    asked.clear()
    assert sp.resolve("p", str(conf), "nope", 1.0) is None
    assert [n for _s, n in asked] == ["nope.default.svc.cluster.local", "nope.svc.cluster.local",
                                      "nope.cluster.local", "nope"]


# --- UDP services and node ports from outside (issue #14 item 4) ---------------------------

def udp_svc(eps=("a", "b")):
    return {"name": "dgram", "namespace": "default", "cluster_ip": "10.96.0.2", "session_affinity": "None",
            "ports": [{"port": 81, "target_port": 8081, "protocol": "udp"}],
            "endpoints": [{"pod": p, "ip": f"10.244.0.{i + 2}", "node": "node1"} for i, p in enumerate(eps)]}


def test_udp_ports_go_to_the_udp_agent_and_are_checked(monkeypatch):
    monkeypatch.setattr(sp, "_get", None)  # never TCP for a UDP port
    monkeypatch.setattr(sp, "_udp", fake_get([({"name": "a", "client_ip": "10.244.0.9"}, None, 0.01),
                                              ({"name": "b", "client_ip": "10.244.0.9"}, None, 0.01)]))
    params = dict(PARAMS, udp_port=8081)
    out = sp.check_service(params, udp_svc(), udp_svc()["ports"][0], "c", "c", "10.244.0.9", True)
    assert [(r["proto"], r["ok"], r["dst"]) for r in out] == [("udp", True, "default/dgram:81/udp"),
                                                              ("endpoints", True, "default/dgram:81/udp")]
    monkeypatch.setattr(sp, "_udp", fake_get([({"name": "a", "client_ip": "10.244.0.1"}, None, 0.01)]))
    out = sp.check_service(params, udp_svc(), udp_svc()["ports"][0], "c", "c", "10.244.0.9", False)
    assert [(r["proto"], r["ok"]) for r in out] == [("udp", False)]  # masqueraded: the endpoint saw another IP


@pytest.mark.parametrize("answer,ok", [((None, "refused", 0.02), True), ((None, "timeout", 3.0), False),
                                       ((None, "refused", 1.2), False)])
def test_udp_reject_wants_an_icmp_unreachable_not_a_timeout(monkeypatch, answer, ok):
    monkeypatch.setattr(sp, "_get", None)
    monkeypatch.setattr(sp, "_udp", fake_get([answer]))
    out = sp.check_service(dict(PARAMS, udp_port=8081), udp_svc(eps=()), udp_svc()["ports"][0], "c", "c", "x", False)
    assert [(r["proto"], r["ok"]) for r in out] == [("reject", ok)]
    assert "ICMP" in out[0]["expected"]


def np_svc(policy="Cluster", eps=(("a", "node1"), ("b", "node2"))):
    return {"name": "np", "namespace": "default", "cluster_ip": "10.96.0.3", "type": "NodePort",
            "external_traffic_policy": policy,
            "ports": [{"port": 80, "target_port": 8083, "protocol": "tcp", "node_port": 30083}],
            "endpoints": [{"pod": p, "ip": f"10.244.0.{i + 2}", "node": n} for i, (p, n) in enumerate(eps)]}


NODES = [{"name": "node1", "ip": "192.168.50.11"}, {"name": "node2", "ip": "192.168.50.12"},
         {"name": "node3", "ip": "192.168.50.13"}]
OUT = "203.0.113.10"


def outside_params(services, **kw):
    return dict(PARAMS, mode="outside", services=services, nodes=NODES, netns=None, source_label="lab-out",
                udp_port=8081, workers=4, **kw)


def answer_by_node(table):
    """_get answering from table[node ip] (a cycled list of replies)."""
    cycles = {ip: itertools.cycle(replies) for ip, replies in table.items()}

    def get(_ns, ip, _port, _timeout):
        return next(cycles[ip])
    return get


def test_nodeport_cluster_answers_on_every_node_masqueraded(monkeypatch):
    masq = [({"name": "a", "client_ip": "192.168.50.11", "_src": OUT}, None, 0.01),
            ({"name": "b", "client_ip": "10.244.1.1", "_src": OUT}, None, 0.01)]
    monkeypatch.setattr(sp, "_get", answer_by_node({n["ip"]: masq for n in NODES}))
    out = sp.check_nodeports(outside_params([np_svc()]))
    assert {(r["dst_node"], r["proto"], r["ok"]) for r in out} == {
        ("node1", "tcp", True), ("node1", "endpoints", True), ("node2", "tcp", True), ("node3", "tcp", True)}
    assert all(r["check"] == "nodeport" and r["src_node"] == "outside" and r["src"] == "lab-out" for r in out)
    # Not masqueraded: the endpoint saw the caller.
    kept = [({"name": "a", "client_ip": OUT, "_src": OUT}, None, 0.01)]
    monkeypatch.setattr(sp, "_get", answer_by_node({n["ip"]: kept for n in NODES}))
    out = sp.check_nodeports(outside_params([np_svc()]))
    assert not any(r["ok"] for r in out if r["proto"] == "tcp")
    assert next(r for r in out if r["proto"] == "endpoints")["error"] == "never reached: b"


def test_nodeport_local_keeps_the_client_and_only_local_endpoints(monkeypatch):
    good = {"192.168.50.11": [({"name": "a", "client_ip": OUT, "_src": OUT}, None, 0.01)],
            "192.168.50.12": [({"name": "b", "client_ip": OUT, "_src": OUT}, None, 0.01)],
            "192.168.50.13": [(None, "timeout", 1.0)]}
    monkeypatch.setattr(sp, "_get", answer_by_node(good))
    out = sp.check_nodeports(outside_params([np_svc("Local")]))
    assert sorted((r["dst_node"], r["proto"], r["ok"]) for r in out) == [
        ("node1", "endpoints", True), ("node1", "tcp", True), ("node2", "endpoints", True), ("node2", "tcp", True),
        ("node3", "no-local", True)]
    bad = dict(good, **{"192.168.50.11": [({"name": "b", "client_ip": "192.168.50.11", "_src": OUT}, None, 0.01)],
                        "192.168.50.13": [({"name": "a", "client_ip": OUT, "_src": OUT}, None, 0.01)]})
    monkeypatch.setattr(sp, "_get", answer_by_node(bad))
    out = {(r["dst_node"], r["proto"]): r for r in sp.check_nodeports(outside_params([np_svc("Local")]))}
    assert not out[("node1", "tcp")]["ok"] and "not an endpoint on node1" in out[("node1", "tcp")]["error"]
    assert "not the caller" in out[("node1", "tcp")]["error"]
    assert not out[("node3", "no-local")]["ok"]


def test_nodeport_without_endpoints_is_refused_on_every_node(monkeypatch):
    monkeypatch.setattr(sp, "_get", fake_get([(None, "refused", 0.01)]))
    out = sp.check_nodeports(outside_params([np_svc(eps=())]))
    assert [(r["dst_node"], r["proto"], r["ok"]) for r in sorted(out, key=lambda r: r["dst_node"])] == [
        ("node1", "reject", True), ("node2", "reject", True), ("node3", "reject", True)]


def test_only_node_port_services_are_checked_from_outside(monkeypatch):
    monkeypatch.setattr(sp, "_get", None)
    assert sp.check_nodeports(outside_params([svc(), udp_svc()])) == []
