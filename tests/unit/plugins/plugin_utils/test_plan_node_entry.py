# SPDX-License-Identifier: GPL-3.0-or-later
"""The ready values of a node entry (gateway_ips, vtep_cidrs): what the roles once computed
with regexes, derived at build time for every node, those of an older cached plan too."""
from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan


def _nodes(names=("node1", "node2", "node3")):
    return {
        name: {"underlay": {"interface": "eth0", "ip": f"192.168.50.{11 + i}", "prefix": 24,
                            "network": "192.168.50.0/24", "mtu": 1500},
               "recorded": {}, "pods": [f"{name}-web"]}
        for i, name in enumerate(names)
    }


@pytest.mark.parametrize("cluster_cidr", ["10.244.0.0/16", ["10.244.0.0/16", "fd00:10:244::/56"]])
def test_ready_values_match_gateways_and_vtep_ips(cluster_cidr):
    plan = cluster_plan.build_plan(_nodes(), cluster_cidr=cluster_cidr, backend="vxlan")
    for entry in plan["nodes"].values():
        assert entry["gateway_ips"] == [gw.split("/")[0] for gw in entry["gateways"]]
        assert entry["gateway_ipv4"] == entry["gateway_ips"][0]
        assert entry["vtep_cidrs"] == [ip + ("/128" if ":" in ip else "/32") for ip in entry["vtep_ips"]]


def test_dual_stack_values():
    plan = cluster_plan.build_plan(_nodes(), cluster_cidr=["10.244.0.0/16", "fd00:10:244::/56"], backend="vxlan")
    node2 = plan["nodes"]["node2"]
    assert node2["gateways"] == ["10.244.1.1/24", "fd00:10:244:1::1/64"]
    assert node2["gateway_ips"] == ["10.244.1.1", "fd00:10:244:1::1"]
    assert node2["gateway_ipv4"] == "10.244.1.1"
    assert node2["vtep_ips"] == ["10.244.1.0", "fd00:10:244:1::"]
    assert node2["vtep_cidrs"] == ["10.244.1.0/32", "fd00:10:244:1::/128"]


def _old_cache(plan):
    """The plan as the code before gateway_ips and vtep_cidrs wrote it to flatnet_plan_file."""
    old = json.loads(cluster_plan.plan_json(plan))
    for entry in old["nodes"].values():
        del entry["gateway_ips"], entry["gateway_ipv4"], entry["vtep_cidrs"]
    return old


def test_limit_run_with_an_old_cache_gives_every_node_the_ready_values():
    full = cluster_plan.build_plan(_nodes(), cluster_cidr=["10.244.0.0/16", "fd00:10:244::/56"], backend="vxlan")
    # --limit node1: node2 and node3 come from the cached plan only.
    limited = cluster_plan.build_plan(_nodes(("node1",)), cluster_cidr=["10.244.0.0/16", "fd00:10:244::/56"],
                                      backend="vxlan", cached=_old_cache(full),
                                      inventory_nodes=["node1", "node2", "node3"])
    assert limited == full
    for name in ("node2", "node3"):
        assert limited["nodes"][name]["gateway_ips"] == full["nodes"][name]["gateway_ips"]
        assert limited["nodes"][name]["gateway_ipv4"] == full["nodes"][name]["gateway_ipv4"]
        assert limited["nodes"][name]["vtep_cidrs"] == full["nodes"][name]["vtep_cidrs"]


def test_ipv6_only_has_no_ipv4_gateway():
    plan = cluster_plan.build_plan(_nodes(), cluster_cidr="fd00:10:244::/56", backend="vxlan")
    assert {entry["gateway_ipv4"] for entry in plan["nodes"].values()} == {None}


def test_full_rerun_with_an_old_cache_is_the_same_plan():
    full = cluster_plan.build_plan(_nodes())
    again = cluster_plan.build_plan(_nodes(), cached=copy.deepcopy(_old_cache(full)))
    assert cluster_plan.plan_json(again) == cluster_plan.plan_json(full)


# What the roles passed their modules with regexes (before the plan carried the ready values),
# against the expressions they use now: rendered by Ansible on each node of a couple of plans.
ROLE_ARGS = {
    "pods/dns gateways": (
        "{{ flatnet_plan.nodes[inventory_hostname].gateways | map('regex_replace', '/.*$', '') | list }}",
        "{{ flatnet_plan.nodes[inventory_hostname].gateway_ips }}",
    ),
    "services source, verify host_source": (
        "{{ _node.gateways | reject('search', ':') | map('regex_replace', '/.*$', '') | first | default('OMIT') }}",
        "{{ _node.gateway_ipv4 | default('OMIT', true) }}",
    ),
    "backend vxlan addresses": (
        "{{ _node.vtep_ips | map('regex_replace', '^([^/]*:[^/]*)$', '\\1/128') "
        "| map('regex_replace', '^([0-9.]+)$', '\\1/32') | list }}",
        "{{ _node.vtep_cidrs }}",
    ),
}


@pytest.mark.parametrize("what", sorted(ROLE_ARGS))
@pytest.mark.parametrize("cluster_cidr", ["10.244.0.0/16", ["10.244.0.0/16", "fd00:10:244::/56"], "fd00:10:244::/56"])
def test_roles_pass_what_their_regexes_gave(what, cluster_cidr):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    from ansible_collections.flatnet.cluster.tests.unit.compat import trust_as_template

    plan = cluster_plan.build_plan(_nodes(), cluster_cidr=cluster_cidr, backend="vxlan")
    old, new = ROLE_ARGS[what]
    for name in plan["nodes"]:
        templar = Templar(loader=DataLoader(), variables={
            "flatnet_plan": plan, "inventory_hostname": name,
            "_node": trust_as_template("{{ flatnet_plan.nodes[inventory_hostname] }}")})
        before = templar.template(trust_as_template(old))
        assert templar.template(trust_as_template(new)) == before
        assert before and before != "OMIT" or cluster_cidr == "fd00:10:244::/56"
