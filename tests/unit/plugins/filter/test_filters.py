# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.filter import node_cidrs, pod_ips, probe_targets, vtep_mac
from ansible_collections.flatnet.cluster.plugins.plugin_utils import node_blocks

MODULES = {"node_cidrs": node_cidrs, "pod_ips": pod_ips, "probe_targets": probe_targets, "vtep_mac": vtep_mac}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_file_provides_its_documented_filter(name):
    module = MODULES[name]
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["name"] == name
    assert list(module.FilterModule().filters()) == [name]
    assert yaml.safe_load(module.RETURN)["_value"]
    assert yaml.safe_load(module.EXAMPLES)


def _filter(name):
    return MODULES[name].FilterModule().filters()[name]


def test_node_cidrs():
    f = _filter("node_cidrs")
    assert f("10.244.0.0/16", ["b", "a"]) == {"a": ["10.244.0.0/24"], "b": ["10.244.1.0/24"]}
    assert f(["10.244.0.0/16", "fd00::/56"], {"a": 1}, prefix=25, prefix_v6=60) == {
        "a": ["10.244.0.0/25", "fd00::/60"]}
    assert f("10.244.0.0/16", ["a", "b"], existing={"a": "10.244.5.0/24"}, pins={"b": "10.244.0.0/24"}) == {
        "a": ["10.244.5.0/24"], "b": ["10.244.0.0/24"]}


def test_node_cidrs_error():
    with pytest.raises(AnsibleFilterError, match=r"node_cidrs: cluster_cidr 10\.244\.0\.0/16 overlaps reserved range"):
        _filter("node_cidrs")("10.244.0.0/16", ["a"], reserved=["10.244.0.0/24"])


def test_pod_ips():
    f = _filter("pod_ips")
    assert f("10.244.1.0/24", ["web", "db"]) == {"db": ["10.244.1.2/24"], "web": ["10.244.1.3/24"]}
    assert f("10.244.1.0/24", ["web"], existing={"web": "10.244.1.40"}) == {"web": ["10.244.1.40/24"]}
    assert f("10.244.1.0/24", ["web"], pins={"web": "10.244.1.80"}) == {"web": ["10.244.1.80/24"]}


def test_pod_ips_error():
    with pytest.raises(AnsibleFilterError, match=r"pod_ips: .*10\.244\.1\.1 is the gateway"):
        _filter("pod_ips")("10.244.1.0/24", ["web"], pins={"web": "10.244.1.1"})


def test_vtep_mac():
    assert _filter("vtep_mac")("192.168.50.11") == node_blocks.vtep_mac("192.168.50.11")
    with pytest.raises(AnsibleFilterError, match="vtep_mac: "):
        _filter("vtep_mac")("not-an-ip")


PLAN = {"nodes": {
    "node2": {"pods": [{"name": "node2-a", "ips": ["10.244.1.2/24", "fd00:1::2/64"]},
                       {"name": "node2-b", "ips": ["10.244.1.3/24"]}]},
    "node1": {"pods": [{"name": "node1-a", "ips": ["10.244.0.2/24"]}]},
    "node3": {"pods": []},
}}


def test_probe_targets_lists_every_pod_address_nodes_sorted():
    f = _filter("probe_targets")
    assert f(PLAN) == [
        {"node": "node1", "pod": "node1-a", "ip": "10.244.0.2"},
        {"node": "node2", "pod": "node2-a", "ip": "10.244.1.2"},
        {"node": "node2", "pod": "node2-a", "ip": "fd00:1::2"},
        {"node": "node2", "pod": "node2-b", "ip": "10.244.1.3"},
    ]
    assert f(PLAN, lines=True) == ["node1 node1-a 10.244.0.2", "node2 node2-a 10.244.1.2",
                                   "node2 node2-a fd00:1::2", "node2 node2-b 10.244.1.3"]


def test_probe_targets_first_pods_of_every_node():
    f = _filter("probe_targets")
    assert f(PLAN, first_pods=True) == [
        {"node": "node1", "pod": "node1-a", "ip": "10.244.0.2"},
        {"node": "node2", "pod": "node2-a", "ip": "10.244.1.2"},
        {"node": "node2", "pod": "node2-a", "ip": "fd00:1::2"},
    ]


def test_probe_targets_lines_are_what_the_probe_module_reads():
    from ansible_collections.flatnet.cluster.plugins.modules import probe
    f = _filter("probe_targets")
    assert probe.parse_target_lines(f(PLAN, lines=True)) == f(PLAN)


@pytest.mark.parametrize("bad", [None, [], {"pods": []}, {"nodes": ["node1"]}])
def test_probe_targets_refuses_what_is_not_a_plan(bad):
    with pytest.raises(AnsibleFilterError, match="probe_targets: the input must be the plan"):
        _filter("probe_targets")(bad)
