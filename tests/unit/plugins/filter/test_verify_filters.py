# SPDX-License-Identifier: GPL-3.0-or-later
"""The verify role's filters (verify_sources, verify_agent_lifetime, nodeport_checks) give the
modules exactly what the role's Jinja loops gave them: both rendered on a couple of plans."""
from __future__ import annotations

import copy

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.flatnet.cluster.plugins.filter import nodeport_checks, verify_agent_lifetime, verify_sources
from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan
from ansible_collections.flatnet.cluster.tests.unit.compat import trust_as_template

MODULES = {"nodeport_checks": nodeport_checks, "verify_agent_lifetime": verify_agent_lifetime,
           "verify_sources": verify_sources}

# roles/verify/tasks/main.yml before the filters, verbatim: the Jinja the filters replace.
OLD_ROLE = {
    '_live': (
        "{{ _flatnet_verify_cni.containers | selectattr('netns') | list }}"
    ),
    '_me': (
        '{{ flatnet_plan.nodes[inventory_hostname] }}'
    ),
    '_flatnet_verify_containers': (
        "{{ _live | map('dict2items') | map('selectattr', 'key', 'in', ['netns', 'container_id', 'ip']) | "
        "map('items2dict') | list }}"
    ),
    '_flatnet_verify_container_sources': (
        '{%- set ns = namespace(out=[]) -%} {%- for c in _live -%}\n'
        "  {%- set cidr = flatnet_plan.nodes[inventory_hostname].pod_cidrs | select('search', "
        "':' if ':' in c.ip else '^[0-9.]+/') | first -%}\n  {%- set ns.out = ns.out + [{'name': c.netns, "
        "'ips': [c.ip ~ '/' ~ cidr.split('/')[1]]}] -%}\n{%- endfor -%} {{ ns.out }}"
    ),
    '_flatnet_verify_container_targets': (
        '{%- set ns = namespace(out=[]) -%} {%- for c in _live -%}\n'
        "  {%- set ns.out = ns.out + [{'node': inventory_hostname, 'pod': c.netns, 'ip': c.ip}] -%}\n"
        '{%- endfor -%} {{ ns.out }}'
    ),
    '_flatnet_verify_local_pods': (
        "{%- set ns = namespace(out=[]) -%} {%- for p in _me.pods -%}\n  {%- set ns.out = ns.out + [{'name': p.name, "
        "'ips': p.ips}] -%}\n{%- endfor -%} {{ ns.out }}"
    ),
    '_flatnet_verify_node_ips': (
        "{{ ([_me.underlay.ip] + (_me.gateways | map('regex_replace', '/.*$', '') | list) + (_me.vtep_ips | "
        "default([])))\n   | map('regex_replace', '/.*$', '') | unique | list }}"
    ),
    '_flatnet_verify_agent_lifetime': (
        '{%- if flatnet_verify_agent_lifetime is not none -%}\n  {{ flatnet_verify_agent_lifetime | float }}\n'
        "{%- else -%}\n  {%- set counts = flatnet_plan.nodes.values() | map(attribute='pods') | map('length') | "
        'list -%}\n  {%- set probes = ((counts | max) + 1) * (counts | sum) * 4 + (counts | length) * 4 -%}\n'
        '  {#- a retry round may take up to 5 timeouts per failed probe -#}\n'
        "  {{ 600 + ((probes / (flatnet_verify_workers | int)) | round(0, 'ceil')) * 2 * (flatnet_verify_timeout | "
        'float)\n         * (1 + 5 * (flatnet_verify_retries | int)) }}\n{%- endif -%}'
    ),
    '_flatnet_verify_nodeport_services': (
        "{{ flatnet_plan.services | default([]) | selectattr('type', 'defined') | selectattr('type', 'equalto', "
        "'NodePort') | list }}"
    ),
    '_flatnet_verify_nodeports_skipped': (
        '{%- set ns = namespace(out=[]) -%} {%- if not flatnet_verify_nodeport_from -%}\n'
        "  {%- for svc in flatnet_plan.services | default([]) if svc.type | default('ClusterIP') == 'NodePort' -%}\n"
        "    {%- for port in svc.ports if port.node_port -%}\n      {%- set ns.out = ns.out + [{'check': 'nodeport', "
        "'proto': port.protocol, 'src_node': 'outside',\n            'src': 'nowhere', 'src_ip': none, "
        "'dst_node': none,\n            'dst': svc.namespace ~ '/' ~ svc.name ~ ':' ~ port.node_port, "
        "'dst_ip': none,\n            'ok': false, 'skipped': true, 'reason': 'skipped',\n"
        "            'error': 'not checked: no place outside the cluster to reach the node ports from; set '\n"
        "                     ~ 'flatnet_verify_nodeport_from (for example {host: localhost}, "
        "the controller)'}] -%}\n    {%- endfor -%}\n  {%- endfor -%}\n{%- endif -%} {{ ns.out }}"
    ),
    '_flatnet_verify_nodeport_targets': (
        '{%- set ns = namespace(out=[]) -%} {%- for n in flatnet_plan.nodes | sort -%}\n'
        "  {%- set ns.out = ns.out + [{'name': n, 'ip': flatnet_plan.nodes[n].underlay.ip}] -%}\n"
        '{%- endfor -%} {{ ns.out }}'
    ),
}


def _filter(name):
    return MODULES[name].FilterModule().filters()[name]


def _render(name, variables):
    """One of the old role's values, rendered as the role rendered it (its vars lazily)."""
    names = dict(variables)
    for key in ("_live", "_me"):
        names[key] = trust_as_template(OLD_ROLE[key])
    templar = Templar(loader=DataLoader(), variables=names)
    return templar.template(trust_as_template(OLD_ROLE[name]))


def _underlay(i, v6=False):
    ip = f"fd00:50::{11 + i}" if v6 else f"192.168.50.{11 + i}"
    network = "fd00:50::/64" if v6 else "192.168.50.0/24"
    return {"interface": "eth0", "ip": ip, "prefix": int(network.split("/")[1]), "network": network, "mtu": 1500}


def _plan_v4():
    nodes = {f"node{i}": {"underlay": _underlay(i), "recorded": {}, "pods": [], "pods_per_node": i}
             for i in (1, 2, 3)}
    plan = cluster_plan.build_plan(nodes)
    plan["services"] = [
        {"namespace": "default", "name": "web", "type": "NodePort",
         "ports": [{"protocol": "TCP", "port": 80, "node_port": 30080},
                   {"protocol": "UDP", "port": 53, "node_port": 30053}]},
        {"namespace": "default", "name": "db", "type": "ClusterIP", "ports": [{"protocol": "TCP", "port": 5432}]},
        {"namespace": "kube-system", "name": "dns", "ports": [{"protocol": "UDP", "port": 53}]},
        {"namespace": "shop", "name": "cart", "type": "NodePort",
         "ports": [{"protocol": "TCP", "port": 8080, "node_port": None}, {"protocol": "TCP", "port": 81, "node_port": 31081}]},
    ]
    return plan


def _plan_dual():
    nodes = {f"node{i}": {"underlay": _underlay(i, v6=True), "recorded": {}, "pods": [f"web-{i}", f"db-{i}"]}
             for i in (1, 2)}
    return cluster_plan.build_plan(nodes, cluster_cidr=["10.244.0.0/16", "fd00:10:244::/56"], backend="vxlan")


PLANS = {"v4": _plan_v4, "dual": _plan_dual}

CONTAINERS = {
    "none": [],
    "v4": [{"container_id": "a" * 64, "ip": "10.244.0.200", "ifname": "eth0", "netns": "cni-1"},
           {"container_id": "b" * 64, "ip": "10.244.0.201", "ifname": "eth0", "netns": None}],
    "dual": [{"container_id": "c" * 64, "ip": "10.244.0.200", "ifname": "eth0", "netns": "cni-2"},
             {"container_id": "c" * 64, "ip": "fd00:10:244::c8", "ifname": "eth0", "netns": "cni-2"},
             {"container_id": "d" * 64, "ip": "10.244.0.210", "ifname": "eth1", "netns": ""}],
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_file_provides_its_documented_filter(name):
    module = MODULES[name]
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["name"] == name
    assert list(module.FilterModule().filters()) == [name]
    assert yaml.safe_load(module.RETURN)["_value"]
    assert yaml.safe_load(module.EXAMPLES)


@pytest.mark.parametrize("plan_name, containers", [
    ("v4", "none"), ("v4", "v4"), ("dual", "none"), ("dual", "v4"), ("dual", "dual"),  # IPv6 containers need a v6 block
])
def test_verify_sources_is_what_the_role_built(plan_name, containers):
    plan = PLANS[plan_name]()
    node = "node1"
    variables = {"flatnet_plan": plan, "inventory_hostname": node,
                 "_flatnet_verify_cni": {"containers": copy.deepcopy(CONTAINERS[containers])}}
    got = _filter("verify_sources")(copy.deepcopy(plan), node, copy.deepcopy(CONTAINERS[containers]))
    assert got["containers"] == _render("_flatnet_verify_containers", variables)
    assert got["container_targets"] == _render("_flatnet_verify_container_targets", variables)
    assert got["node_ips"] == _render("_flatnet_verify_node_ips", variables)
    # The role appended the container sources to the pods' (when there were any).
    assert got["local_pods"] == (_render("_flatnet_verify_local_pods", variables)
                                 + _render("_flatnet_verify_container_sources", variables))
    if containers != "none":
        assert [s["name"] for s in got["local_pods"]][-1].startswith("cni-")


def test_verify_sources_values():
    got = _filter("verify_sources")(_plan_dual(), "node1", CONTAINERS["dual"])
    assert got["node_ips"] == ["fd00:50::12", "10.244.0.1", "fd00:10:244::1", "10.244.0.0", "fd00:10:244::"]
    assert got["local_pods"][-2:] == [{"name": "cni-2", "ips": ["10.244.0.200/24"]},
                                      {"name": "cni-2", "ips": ["fd00:10:244::c8/64"]}]
    assert got["containers"] == [{"container_id": "c" * 64, "ip": "10.244.0.200", "netns": "cni-2"},
                                 {"container_id": "c" * 64, "ip": "fd00:10:244::c8", "netns": "cni-2"}]


@pytest.mark.parametrize("bad", [None, "plan", {"nodes": []}])
def test_verify_sources_refuses_what_is_not_a_plan(bad):
    with pytest.raises(AnsibleFilterError, match="verify_sources: the input must be the plan"):
        _filter("verify_sources")(bad, "node1")


def test_verify_sources_refuses_a_node_outside_the_plan():
    with pytest.raises(AnsibleFilterError, match="node9 is not in the plan"):
        _filter("verify_sources")(_plan_v4(), "node9")


@pytest.mark.parametrize("plan_name", sorted(PLANS))
@pytest.mark.parametrize("workers, timeout, retries, lifetime", [
    (32, 2, 1, None), (32, 2, 0, None), (3, 0.5, 1, None), ("7", "1.5", "1", None), (32, 2, 1, 0), (32, 2, 1, "90"),
    (1, 2, 1, None),
])
def test_agent_lifetime_is_what_the_role_computed(plan_name, workers, timeout, retries, lifetime):
    plan = PLANS[plan_name]()
    variables = {"flatnet_plan": plan, "flatnet_verify_workers": workers, "flatnet_verify_timeout": timeout,
                 "flatnet_verify_retries": retries, "flatnet_verify_agent_lifetime": lifetime}
    got = _filter("verify_agent_lifetime")(plan, workers=workers, timeout=timeout, retries=retries, lifetime=lifetime)
    old = _render("_flatnet_verify_agent_lifetime", variables)
    assert isinstance(got, float)
    assert got == float(old)


def test_agent_lifetime_values():
    plan = _plan_v4()  # 1, 2 and 3 pods: (3 + 1) x 6 x 4 + 3 x 4 = 108 probes
    assert _filter("verify_agent_lifetime")(plan, workers=32, timeout=2, retries=1) == 600 + 4 * 2 * 2 * 6
    assert _filter("verify_agent_lifetime")(plan, workers=32, timeout=2, retries=1, lifetime=0) == 0.0
    with pytest.raises(AnsibleFilterError, match="verify_agent_lifetime"):
        _filter("verify_agent_lifetime")(plan, workers=0, timeout=2, retries=1)


@pytest.mark.parametrize("plan_name", sorted(PLANS))
@pytest.mark.parametrize("nodeport_from", [None, {}, {"host": "localhost"}, {"host": "outside", "netns": "lab-out"}])
def test_nodeport_checks_are_what_the_role_built(plan_name, nodeport_from):
    plan = PLANS[plan_name]()
    variables = {"flatnet_plan": plan, "flatnet_verify_nodeport_from": nodeport_from}
    got = _filter("nodeport_checks")(plan, nodeport_from)
    assert got["services"] == _render("_flatnet_verify_nodeport_services", variables)
    assert got["skipped"] == _render("_flatnet_verify_nodeports_skipped", variables)
    assert got["targets"] == _render("_flatnet_verify_nodeport_targets", variables)


def test_nodeport_checks_values():
    got = _filter("nodeport_checks")(_plan_v4())
    assert [s["name"] for s in got["services"]] == ["web", "cart"]
    assert [r["dst"] for r in got["skipped"]] == ["default/web:30080", "default/web:30053", "shop/cart:31081"]
    assert all(r["skipped"] and not r["ok"] and r["src_node"] == "outside" for r in got["skipped"])
    assert got["targets"] == [{"name": f"node{i}", "ip": f"192.168.50.{11 + i}"} for i in (1, 2, 3)]
    assert _filter("nodeport_checks")(_plan_v4(), {"host": "localhost"})["skipped"] == []
