# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import copy

import pytest

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan, services_plan as svcs
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError

CIDR = "10.96.0.0/12"


def web(**kw):
    entry = {"name": "web", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "target_port": 8080}]}
    entry.update(kw)
    return entry


def node(ip, pods):
    return {"underlay": {"interface": "eth0", "ip": ip, "prefix": 24, "network": "192.168.50.0/24", "mtu": 1500},
            "recorded": {}, "pods": pods}


def nodes():
    return {
        "node1": node("192.168.50.11", [{"name": "a", "labels": {"app": "web"}}, {"name": "b"}]),
        "node2": node("192.168.50.12", [{"name": "c", "labels": {"app": "web", "tier": "x"}},
                                        {"name": "d", "labels": {"app": "db"}}]),
    }


def plan(services, requests=None, cached=None, node_port_range="30000-32767"):
    requests = requests if requests is not None else nodes()
    svcs.check_pod_labels(requests)
    built = cluster_plan.build_plan(copy.deepcopy(requests), cached=cached)
    return svcs.plan_services(built, requests, services, node_port_range, cached)


BAD = [
    ("not a list", {"name": "x"}, r"flatnet_services .* is not a list"),
    ("entry not mapping", ["web"], r"entry 1 'web' is not a mapping"),
    ("no name", [{"ports": [{"port": 80}]}], r"has no name"),
    ("bad name", [web(name="Web_1")], r"service name 'Web_1'"),
    ("bad namespace", [web(namespace="a b")], r"namespace 'a b'"),
    ("unknown key", [web(selectr={"a": "b"})], r"unknown key 'selectr' \(did you mean selector\?\)"),
    ("duplicate", [web(), web()], r"service default/web is declared twice"),
    ("bad type", [web(type="LoadBalancer")], r"type 'LoadBalancer'.*ClusterIP or NodePort"),
    ("no ports", [web(ports=[])], r"ports of service default/web"),
    ("port range", [web(ports=[{"port": 70000}])], r"port 1 of service default/web.*port 70000.*out of range"),
    ("port zero", [web(ports=[{"port": 0}])], r"port 0.*out of range"),
    ("port string", [web(ports=[{"port": "http"}])], r"'http'.*not an integer"),
    ("target port", [web(ports=[{"port": 80, "target_port": 65536}])], r"target_port 65536"),
    ("protocol", [web(ports=[{"port": 80, "protocol": "sctp"}])], r"protocol 'sctp' is not supported"),
    ("port unknown key", [web(ports=[{"port": 80, "nodeport": 30001}])], r"unknown key 'nodeport'.*node_port"),
    ("unnamed of many", [web(ports=[{"port": 80}, {"port": 81}])], r"has no name; a service with several ports"),
    ("same port twice", [web(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}])], r"port 80/tcp twice"),
    ("same name twice", [web(ports=[{"name": "a", "port": 80}, {"name": "a", "port": 81}])], r"names two ports 'a'"),
    ("node_port on ClusterIP", [web(ports=[{"port": 80, "node_port": 30001}])], r"type is ClusterIP"),
    ("node_port outside", [web(type="NodePort", ports=[{"port": 80, "node_port": 29999}])],
     r"node_port 29999 .* outside flatnet_service_node_port_range 30000-32767"),
    ("node_port twice", [web(type="NodePort", ports=[{"port": 80, "node_port": 30001}]),
                         web(name="api", type="NodePort", ports=[{"port": 80, "node_port": 30001}])],
     r"node_port 30001/tcp is pinned by both default/web and default/api"),
    ("pin outside", [web(cluster_ip="10.244.0.5")], r"cluster_ip 10.244.0.5 .* outside flatnet_service_cidr"),
    ("pin not an address", [web(cluster_ip="banana")], r"cluster_ip of service default/web .*'banana'"),
    ("pin network", [web(cluster_ip="10.96.0.0")], r"network or broadcast"),
    ("pin dns", [web(cluster_ip="10.96.0.10")], r"cluster DNS address"),
    ("pin taken", [web(cluster_ip="10.96.0.5"), web(name="api", cluster_ip="10.96.0.5")],
     r"cluster_ip 10.96.0.5 is pinned by both default/web and default/api"),
    ("affinity", [web(session_affinity="Sticky")], r"session_affinity 'Sticky'"),
    ("affinity timeout", [web(session_affinity="ClientIP", session_affinity_timeout=0)],
     r"session_affinity_timeout .* out of range"),
    ("policy", [web(external_traffic_policy="Nearest")], r"external_traffic_policy 'Nearest'"),
    ("selector not mapping", [web(selector=["app"])], r"selector of service default/web .* not a mapping"),
    ("selector value", [web(selector={"app": ["x"]})], r"label app has the value \['x'\]"),
    ("selector bool", [web(selector={"app": True})], r"label app has the value True"),
]


@pytest.mark.parametrize("services,pattern", [(b[1], b[2]) for b in BAD], ids=[b[0] for b in BAD])
def test_bad_services_are_refused_by_name(services, pattern):
    with pytest.raises(PlanError, match=pattern):
        plan(services)


@pytest.mark.parametrize("value", ["30000", "3-2", "0-10", "30000-70000", 5, ["a", "b"]])
def test_bad_node_port_range(value):
    with pytest.raises(PlanError, match="flatnet_service_node_port_range"):
        plan([], node_port_range=value)


@pytest.mark.parametrize("labels,pattern", [
    (["app"], r"labels of pod 'a' on node1 \(flatnet_pods\) \['app'\] is not a mapping"),
    ({"bad key!": "x"}, r"label name 'bad key!'"),
    ({"app": "a b"}, r"label app has the value 'a b'"),
])
def test_bad_pod_labels(labels, pattern):
    requests = nodes()
    requests["node1"]["pods"][0]["labels"] = labels
    with pytest.raises(PlanError, match=pattern):
        plan([], requests)


def test_unknown_pod_key_still_refused():
    requests = nodes()
    requests["node1"]["pods"][0]["lables"] = {"a": "b"}
    with pytest.raises(PlanError, match=r"unknown key 'lables' \(did you mean labels\?\)"):
        plan([], requests)


def test_allocation_endpoints_and_defaults():
    got = plan([web(), web(name="api", namespace="prod", selector={"app": "web", "tier": "x"},
                           type="NodePort", ports=[{"port": 443, "protocol": "TCP"}]),
                web(name="empty", selector=None), web(name="dbs", selector={"app": "db"})])
    by = {f"{s['namespace']}/{s['name']}": s for s in got["services"]}
    assert [f"{s['namespace']}/{s['name']}" for s in got["services"]] == [
        "default/dbs", "default/empty", "default/web", "prod/api"]
    assert by["default/dbs"]["cluster_ip"] == "10.96.0.1"
    assert by["default/empty"]["cluster_ip"] == "10.96.0.2"
    assert by["default/web"]["cluster_ip"] == "10.96.0.3"
    assert by["prod/api"]["cluster_ip"] == "10.96.0.4"
    assert got["dns_ip"] == "10.96.0.10"
    assert [e["pod"] for e in by["default/web"]["endpoints"]] == ["a", "c"]
    assert [(e["pod"], e["node"]) for e in by["prod/api"]["endpoints"]] == [("c", "node2")]
    assert by["default/empty"]["endpoints"] == []
    assert by["prod/api"]["ports"] == [{"name": None, "port": 443, "target_port": 443, "protocol": "tcp",
                                        "node_port": 30000}]
    assert by["default/web"]["ports"][0]["node_port"] is None
    assert by["default/web"]["session_affinity"] == "None"
    assert by["default/web"]["session_affinity_timeout"] == 10800
    assert got["nodes"]["node1"]["pods"][0]["labels"] == {"app": "web"}
    assert "labels" not in got["nodes"]["node1"]["pods"][1]
    assert got["service_node_port_range"] == [30000, 32767]


def test_fresh_addresses_skip_the_dns_address():
    many = [web(name=f"s{i:02d}", selector=None) for i in range(12)]
    ips = [s["cluster_ip"] for s in plan(many)["services"]]
    assert "10.96.0.10" not in ips
    assert ips[-1] == "10.96.0.13"


def test_allocations_are_stable_when_services_come_and_go():
    first = plan([web(name="a1"), web(name="b1"), web(name="c1", type="NodePort")])
    before = {s["name"]: s["cluster_ip"] for s in first["services"]}
    # b1 goes, a0 comes (sorted before everyone): nobody is renumbered, a0 takes b1's old address.
    second = plan([web(name="a0"), web(name="a1"), web(name="c1", type="NodePort")], cached=first)
    after = {s["name"]: s["cluster_ip"] for s in second["services"]}
    assert after["a1"] == before["a1"] and after["c1"] == before["c1"]
    assert after["a0"] == before["b1"]
    assert second["services"][-1]["ports"][0]["node_port"] == first["services"][-1]["ports"][0]["node_port"]


def test_node_records_win_over_the_cache_and_survive_a_lost_cache():
    requests = nodes()
    requests["node2"]["recorded"] = {
        "services": {"default/web": {"cluster_ip": "10.96.0.77", "node_ports": {"80/tcp": 31000}}}}
    got = plan([web(type="NodePort")], requests)
    assert got["services"][0]["cluster_ip"] == "10.96.0.77"
    assert got["services"][0]["ports"][0]["node_port"] == 31000
    assert svcs.allocations(got["services"]) == {"default/web": {"cluster_ip": "10.96.0.77",
                                                                 "node_ports": {"80/tcp": 31000}}}


def test_pin_beats_a_record_and_a_record_colliding_with_a_pin_is_dropped():
    requests = nodes()
    requests["node1"]["recorded"] = {"services": {"default/api": {"cluster_ip": "10.96.0.9"}}}
    got = plan([web(cluster_ip="10.96.0.9"), web(name="api")], requests)
    by = {s["name"]: s["cluster_ip"] for s in got["services"]}
    assert by == {"web": "10.96.0.9", "api": "10.96.0.1"}


@pytest.mark.parametrize("junk", ["banana", "10.244.0.1", "10.96.0.10", None, 5])
def test_unusable_records_are_ignored(junk):
    requests = nodes()
    requests["node1"]["recorded"] = {"services": {"default/web": {"cluster_ip": junk, "node_ports": {"80/tcp": "x"}}}}
    got = plan([web()], requests)
    assert got["services"][0]["cluster_ip"] == "10.96.0.1"


def test_limit_run_keeps_endpoints_of_nodes_outside_the_play():
    full = plan([web()])
    requests = nodes()
    del requests["node2"]
    built = cluster_plan.build_plan(copy.deepcopy(requests), cached=full, inventory_nodes=["node1", "node2"])
    got = svcs.plan_services(built, requests, [web()], "30000-32767", full)
    assert [e["pod"] for e in got["services"][0]["endpoints"]] == ["a", "c"]
    assert got["services"][0]["cluster_ip"] == full["services"][0]["cluster_ip"]


def test_range_exhausted():
    with pytest.raises(PlanError, match="no free port left"):
        plan([web(type="NodePort"), web(name="b", type="NodePort")], node_port_range="30000-30000")


def prepared_plan(services, replicas=2, requests=None, domain="cluster.local", cached=None):
    requests = requests if requests is not None else nodes()
    prep = svcs.prepare(requests, services, CIDR, "30000-32767", replicas, domain,
                        sorted(requests) + sorted((cached or {}).get("nodes", {})))
    built = cluster_plan.build_plan(copy.deepcopy(requests), cached=cached)
    return svcs.plan_services(built, requests, services, "30000-32767", cached, prep)


def test_dns_pods_spread_and_the_dns_service_at_the_tenth_address():
    got = prepared_plan([web(ports=[{"name": "http", "port": 80}])])
    dns = next(s for s in got["services"] if s["name"] == "kube-dns")
    assert dns["cluster_ip"] == "10.96.0.10" and dns["namespace"] == "kube-system"
    assert [(e["pod"], e["node"]) for e in dns["endpoints"]] == [("flatnet-dns-1", "node1"), ("flatnet-dns-2", "node2")]
    assert got["dns"] == {"ip": "10.96.0.10", "domain": "cluster.local", "pods": ["flatnet-dns-1", "flatnet-dns-2"]}
    pod = next(p for p in got["nodes"]["node1"]["pods"] if p["name"] == "flatnet-dns-1")
    assert pod["command"][0] == "dnsmasq" and pod["labels"] == {"k8s-app": "kube-dns"}
    assert "--srv-host=_http._tcp.web.default.svc.cluster.local,web.default.svc.cluster.local,80" in pod["command"]
    assert "--local=/cluster.local/" in pod["command"]
    web_svc = next(s for s in got["services"] if s["name"] == "web")
    assert web_svc["cluster_ip"] == "10.96.0.1"


@pytest.mark.parametrize("replicas,domain,pattern", [
    (-1, "cluster.local", "flatnet_dns_replicas"),
    ("two", "cluster.local", "flatnet_dns_replicas 'two'"),
    (2, "Cluster Local", "flatnet_cluster_domain 'Cluster Local'"),
    (2, "", "flatnet_cluster_domain ''"),
])
def test_bad_dns_settings(replicas, domain, pattern):
    with pytest.raises(PlanError, match=pattern):
        prepared_plan([], replicas=replicas, domain=domain)


def test_a_user_pod_named_like_a_dns_pod_is_refused():
    requests = nodes()
    requests["node2"]["pods"].append({"name": "flatnet-dns-1"})
    with pytest.raises(PlanError, match="pod flatnet-dns-1 is declared on both"):
        prepared_plan([], requests=requests)


def test_no_dns_pods_without_replicas():
    got = prepared_plan([web()], replicas=0)
    assert got["dns"]["ip"] is None and [s["name"] for s in got["services"]] == ["web"]
    assert all(not p["name"].startswith("flatnet-dns") for n in got["nodes"].values() for p in n["pods"])
