# SPDX-License-Identifier: GPL-3.0-or-later
"""The picture of a cluster: model and DOT text from live node states and the plan.

The fixture is what flatnet.cluster.topology read on a deployed 4-node lab-vxlan (two
subnets, auto backend) and that run's plan.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.flatnet.cluster.plugins.action.topology_graph import collect
from ansible_collections.flatnet.cluster.plugins.plugin_utils import topology_picture as topo

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "lab_vxlan_live.json")
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture()
def lab():
    with open(FIXTURE, encoding="utf-8") as f:
        data = json.load(f)
    return data["live"], data["plan"]


def node(model, name):
    return next(n for n in model["nodes"] if n["name"] == name)


def drop_route(live, host, dst):
    live[host]["routes"] = [r for r in live[host]["routes"] if not (r["dst"] == dst and r["protocol"] == "157")]


def svg_texts(dot_text):
    """The SVG that dot makes of the text, parsed: (root, all text joined)."""
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz dot is not installed (Debian package graphviz)")
    svg = subprocess.run([dot, "-Tsvg"], input=dot_text.encode(), capture_output=True, check=True).stdout
    root = ET.fromstring(svg)
    return root, "\n".join("".join(t.itertext()) for t in root.iter(SVG_NS + "text"))


def test_a_healthy_cluster_has_no_drift_and_every_part_is_in_the_model(lab):
    live, plan = lab
    model = topo.build(live, plan)
    assert model["drift"] == []
    assert [n["name"] for n in model["nodes"]] == ["node1", "node2", "node3", "node4"]
    assert [s["network"] for s in model["subnets"]] == ["192.168.50.0/24", "192.168.60.0/24"]
    assert model["router"] == {"gateways": {"192.168.50.0/24": ["192.168.50.1"],
                                            "192.168.60.0/24": ["192.168.60.1"]}}
    paths = {(p["a"], p["b"]): p for p in model["paths"]}
    assert sorted(paths) == [("node1", "node2"), ("node1", "node3"), ("node1", "node4"),
                             ("node2", "node3"), ("node2", "node4"), ("node3", "node4")]
    assert paths[("node1", "node2")]["modes"] == ["direct"]
    assert paths[("node1", "node3")]["modes"] == ["vxlan"] and paths[("node1", "node3")]["vnis"] == [1]
    n1 = node(model, "node1")
    assert n1["underlay"] == "192.168.50.11/24" and n1["bridge"]["addrs"] == ["10.244.0.1/24"]
    assert [(p["name"], p["addrs"], p["state"]) for p in n1["pods"]] == [
        ("node1-pod-1", ["10.244.0.2/24"], "up"), ("node1-pod-2", ["10.244.0.3/24"], "up"),
        ("node1-pod-3", ["10.244.0.4/24"], "up")]
    routes = {r["dst"]: r for r in n1["routes"]}
    assert routes["10.244.1.0/24"]["mode"] == "direct" and routes["10.244.1.0/24"]["via"] == "192.168.50.12"
    assert routes["10.244.2.0/24"]["mode"] == "vxlan" and routes["10.244.2.0/24"]["remote"] == "192.168.60.11"


def test_same_state_same_dot_whatever_the_order(lab):
    live, plan = lab
    first = topo.to_dot(topo.build(live, plan), "t")
    shuffled = {k: copy.deepcopy(live[k]) for k in reversed(sorted(live))}
    for st in shuffled.values():
        st["routes"].reverse()
        st["pods"].reverse()
    assert topo.to_dot(topo.build(shuffled, plan), "t") == first


def test_the_svg_parses_and_names_every_node_pod_and_path(lab):
    live, plan = lab
    root, text = svg_texts(topo.to_dot(topo.build(live, plan), "flatnet cluster labvx"))
    ids = {g.get("id") for g in root.iter(SVG_NS + "g")}
    for name, st in live.items():
        assert name in text and f"node_{name}" in ids
        for pod in st["pods"]:
            assert pod["name"] in text and pod["eth0"]["addrs"][0] in text
        for r in st["routes"]:
            if r["protocol"] == "157":
                assert f"{r['dst']}" in text and f"via {r['gateway']} dev {r['dev']}" in text
    for a, b in [("node1", "node2"), ("node1", "node3"), ("node2", "node4"), ("node3", "node4")]:
        assert f"path_{a}_{b}" in ids
    assert "host-gw" in text and "VXLAN VNI 1" in text
    assert "underlay 192.168.50.0/24" in text and "underlay router" in text and "gw 192.168.60.1" in text
    assert "no drift" in text


def test_a_route_deleted_by_hand_is_drift_in_the_model_and_the_picture(lab):
    live, plan = lab
    drop_route(live, "node1", "10.244.1.0/24")
    model = topo.build(live, plan)
    assert [d["node"] for d in model["drift"]] == ["node1"]
    assert "10.244.1.0/24 via 192.168.50.12 dev eth0 (to node2): route missing" in model["drift"][0]["what"]
    path = next(p for p in model["paths"] if (p["a"], p["b"]) == ("node1", "node2"))
    assert path["problems"] == ["node1→node2 10.244.1.0/24: route missing"]
    dot = topo.to_dot(model)
    assert "MISSING" in dot and "DRIFT: 1" in dot
    root, text = svg_texts(dot)
    edge = next(g for g in root.iter(SVG_NS + "g") if g.get("id") == "path_node1_node2")
    assert any(p.get("stroke") == topo.DRIFT for p in edge.iter(SVG_NS + "path"))
    assert "drift against the plan (1)" in text


def test_extra_wrong_and_vxlan_entries_are_drift(lab):
    live, plan = lab
    live["node3"]["routes"].append({"dst": "10.244.99.0/24", "family": 4, "gateway": "192.168.60.12", "dev": "eth0",
                                    "protocol": "157", "onlink": False, "scope": "global"})
    for r in live["node2"]["routes"]:
        if r["dst"] == "10.244.0.0/24" and r["protocol"] == "157":
            r["gateway"] = "192.168.50.99"
    live["node4"]["vxlan"]["fdb"] = [f for f in live["node4"]["vxlan"]["fdb"] if f["dst"] != "192.168.50.11"]
    text = "\n".join(f"{d['node']}: {d['what']}" for d in topo.build(live, plan)["drift"])
    assert "node3: route 10.244.99.0/24 via 192.168.60.12 dev eth0: route not in the plan" in text
    assert "node2: route 10.244.0.0/24 via 192.168.50.99 dev eth0 (to node1): route differs (planned " \
           "10.244.0.0/24 via 192.168.50.11 dev eth0)" in text
    assert "node4: route 10.244.0.0/24 via 10.244.0.0 dev flatnet.1 onlink (to node1): no FDB entry for" in text


def test_pods_down_missing_or_extra_are_drift(lab):
    live, plan = lab
    pods = {p["name"]: p for p in live["node3"]["pods"]}
    pods["node3-pod-2"]["eth0"]["up"] = False
    pods["node3-pod-3"]["netns"] = "missing"
    live["node4"]["pods"].append(dict(copy.deepcopy(live["node4"]["pods"][0]), name="stray", recorded=True))
    model = topo.build(live, plan)
    text = "\n".join(f"{d['node']}: {d['what']}" for d in model["drift"])
    assert "node3: pod node3-pod-2: eth0 down" in text
    assert "node3: pod node3-pod-3: namespace missing" in text
    assert "node4: pod stray: not in the plan" in text
    states = {p["name"]: p["state"] for p in node(model, "node3")["pods"]}
    assert states == {"node3-pod-1": "up", "node3-pod-2": "down", "node3-pod-3": "missing"}
    assert model["summary"]["pods"] == 12 and model["summary"]["pods_up"] == 10
    dot = topo.to_dot(model)
    assert "DOWN" in dot and "MISSING" in dot and "EXTRA" in dot


def test_a_node_without_live_state_is_drawn_and_is_drift(lab):
    live, plan = lab
    live["node4"] = None
    model = topo.build(live, plan)
    assert any(d["node"] == "node4" and "no live state" in d["what"] for d in model["drift"])
    assert node(model, "node4")["underlay_ip"] == "192.168.60.12"  # from the plan
    svg_texts(topo.to_dot(model))


def test_without_a_plan_nothing_is_drift(lab):
    live, _plan = lab
    drop_route(live, "node1", "10.244.1.0/24")
    model = topo.build(live, None)
    assert model["drift"] == []
    assert {(p["a"], p["b"]) for p in model["paths"]} >= {("node1", "node3"), ("node3", "node4")}


def test_above_the_pod_limit_a_node_shows_a_summary_and_its_pods_with_drift(lab):
    live, plan = lab
    model = topo.build(live, plan, pod_limit=2)
    dot = topo.to_dot(model)
    assert "3 pods, 3 up" in dot and "node1-pod-2" not in dot
    live["node1"]["pods"][1]["eth0"]["carrier"] = False
    dot = topo.to_dot(topo.build(live, plan, pod_limit=2))
    assert "node1-pod-2" in dot and "node1-pod-1<" not in dot


def test_names_with_markup_and_quotes_are_escaped(lab):
    live, plan = lab
    odd = 'n"<b>&x\\'
    live[odd] = live.pop("node4")
    plan = copy.deepcopy(plan)
    plan["nodes"][odd] = plan["nodes"].pop("node4")
    dot = topo.to_dot(topo.build(live, plan), 'title "quoted" <b>')
    # Raw only inside quoted DOT IDs (escaped there); escaped as markup inside HTML-like labels.
    assert "<B>n&quot;&lt;b&gt;&amp;x\\</B>" in dot
    assert 'id="node_n\\"<b>&x\\\\"' in dot
    assert topo.dot_id('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    root, text = svg_texts(dot)
    assert odd in text and 'title "quoted" <b>' in text


def test_lookup_takes_the_longest_prefix():
    routes = [{"dst": "default", "gateway": "10.0.0.1", "family": 4}, {"dst": "10.1.0.0/16", "gateway": "10.0.0.2"},
              {"dst": "10.1.2.0/24", "gateway": None}, {"dst": "fd00::/8", "gateway": "fe80::1"}]
    assert topo.lookup(routes, "10.1.2.3")["dst"] == "10.1.2.0/24"
    assert topo.lookup(routes, "10.1.9.9")["gateway"] == "10.0.0.2"
    assert topo.lookup(routes, "192.0.2.1")["gateway"] == "10.0.0.1"
    assert topo.lookup(routes, "fd00::1")["gateway"] == "fe80::1"
    assert topo.lookup(routes, "2001:db8::1") is None


def test_collect_reads_each_hosts_state_and_marks_the_missing_ones():
    hostvars = {"n1": {"flatnet_topology": {"pods": []}}, "n2": {}}
    args = {"states": None, "hosts": ["n1", "n2"], "state_var": "flatnet_topology"}
    assert collect(args, {"hostvars": hostvars}) == {"n1": {"pods": []}, "n2": None}
    assert collect(dict(args, states={"x": {}}), {}) == {"x": {}}
