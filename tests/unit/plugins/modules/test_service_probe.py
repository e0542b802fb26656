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
