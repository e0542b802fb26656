# SPDX-License-Identifier: GPL-3.0-or-later
"""The preflight's message (plugin_utils/preflight.py, filter preflight_message) is the one the
plan role's assert built in Jinja, word for word, and fails on exactly the same nodes."""
from __future__ import annotations

import copy

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.flatnet.cluster.plugins.filter import preflight_message
from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan, peer_views, preflight
from ansible_collections.flatnet.cluster.tests.unit.compat import trust_as_template

# roles/plan/tasks/main.yml's preflight before the filter, verbatim: the Jinja the filter replaces.
OLD_FAIL_MSG = (
    "{{ inventory_hostname }} cannot run this plan: {{ 'it has VXLAN peers (' ~ (_flatnet_vxlan_peers | join(', "
    "')) ~ ') but its kernel has no vxlan module: load it (modprobe vxlan) or use flatnet_backend: host-gw with "
    "nodes on one subnet. ' if not (ansible_facts.flatnet_node.kernel.vxlan | bool) and _flatnet_vxlan_peers "
    "else '' }} {{- 'nft was not found: install the nftables package or set flatnet_firewall: false. ' if "
    "ansible_facts.flatnet_node.kernel.nft is not truthy and (flatnet_firewall | default(true) | bool) else '' "
    "}} {{- 'IPv6 is disabled on it but the cluster CIDR has an IPv6 range: enable IPv6 or use an IPv4-only "
    "cluster_cidr.' if not (ansible_facts.flatnet_node.kernel.ipv6 | bool) and (flatnet_plan.cluster_cidrs | "
    "select('search', ':') | list) else '' }} {{- ' CNI plugins (bridge, host-local, portmap, loopback) were not "
    "found in ' ~ (flatnet_cni_query.missing_plugins | list | join(' or ')) ~ ': install the "
    "containernetworking-plugins package or set flatnet_cni: false.' if not flatnet_cni_query.plugin_dir and "
    "(flatnet_cni | bool) else '' }} {{- ' It has no /usr/sbin/dnsmasq, which the cluster DNS pods run: install "
    "the Debian package dnsmasq-base, or set flatnet_dns_replicas: 0.' if _flatnet_dns_missing | bool else '' }} "
    "{{- (' Services are declared (flatnet_services) but ' ~ ('br_netfilter is not loaded (no "
    "/proc/sys/net/bridge/bridge-nf-call-iptables)'\n   if "
    'ansible_facts.flatnet_node.kernel.bridge_nf_call_iptables is none\n   else '
    "'net.bridge.bridge-nf-call-iptables is ' ~ ansible_facts.flatnet_node.kernel.bridge_nf_call_iptables)\n~ '; "
    'a pod reaching a service endpoint on its own node would get no answer. Fix: modprobe br_netfilter && sysctl '
    '-w net.bridge.bridge-nf-call-iptables=1, and keep it across reboots with '
    '/etc/modules-load.d/br_netfilter.conf (br_netfilter) and /etc/sysctl.d/99-flatnet.conf '
    "(net.bridge.bridge-nf-call-iptables = 1), as for kube-proxy.') if _flatnet_br_nf_off | bool else '' }} {{- "
    "(' It has no ' ~ (_flatnet_bird_missing | map('regex_replace', '^', '/usr/sbin/') | join(' or ')) ~ ', "
    "which flatnet_backend bgp runs: install the Debian package bird2, or use another flatnet_backend.') if "
    "_flatnet_bird_missing else '' }}"
)
OLD_THAT = [
    (
        'ansible_facts.flatnet_node.kernel.vxlan | bool or (_flatnet_vxlan_peers | length == 0)'
    ),
    (
        'ansible_facts.flatnet_node.kernel.nft is truthy or not (flatnet_firewall | default(true) | bool)'
    ),
    (
        "ansible_facts.flatnet_node.kernel.ipv6 | bool or (flatnet_plan.cluster_cidrs | select('search', ':') | list "
        '| length == 0)'
    ),
    (
        'flatnet_cni_query.plugin_dir is truthy or not (flatnet_cni | bool)'
    ),
    (
        'not (_flatnet_dns_missing | bool)'
    ),
    (
        'not (_flatnet_br_nf_off | bool)'
    ),
    (
        '_flatnet_bird_missing | length == 0'
    ),
]
OLD_VARS = {
    '_flatnet_dns_missing': (
        '{{ (flatnet_plan.dns.ip | default(none) is truthy) and not ansible_facts.flatnet_node.programs.dnsmasq }}'
    ),
    '_flatnet_br_nf_off': (
        '{{ (flatnet_plan.services | default([]) | length > 0) and '
        "ansible_facts.flatnet_node.kernel.bridge_nf_call_iptables != '1' }}"
    ),
    '_flatnet_bird_missing': (
        "{{ ['bird', 'birdc'] | reject('in', ansible_facts.flatnet_node.programs | dict2items | selectattr('value') "
        "| map(attribute='key') | list) | list if flatnet_plan.backend == 'bgp' else [] }}"
    ),
}


def _filter():
    return preflight_message.FilterModule().filters()["preflight_message"]


def _underlay(i, network="192.168.50.0/24"):
    base = network.rsplit(".", 1)[0]
    return {"interface": "eth0", "ip": f"{base}.{10 + i}", "prefix": 24, "network": network, "mtu": 1500}


def _plan(kind):
    nodes = {"node1": {"underlay": _underlay(1), "pods": ["a"]}, "node2": {"underlay": _underlay(2), "pods": ["b"]},
             "node3": {"underlay": _underlay(3, "192.168.60.0/24"), "pods": ["c"]}}
    if kind == "host-gw":
        del nodes["node3"]
        return cluster_plan.build_plan(nodes)
    if kind == "dual":
        plan = cluster_plan.build_plan(nodes, cluster_cidr=["10.244.0.0/16", "fd00:10:244::/56"], backend="auto")
        plan["services"] = [{"namespace": "default", "name": "web", "type": "ClusterIP",
                             "ports": [{"protocol": "TCP", "port": 80}]}]
        plan["dns"] = {"ip": "10.96.0.10", "domain": "cluster.local", "pods": ["a"]}
        return plan
    plan = cluster_plan.build_plan(nodes, backend="bgp")
    plan["dns"] = {"ip": None}
    return plan


def _old(facts, plan, node, firewall, cni, cni_query):
    """The old assert on this node: (failed, message), rendered by Ansible."""
    variables = {"ansible_facts": {"flatnet_node": facts}, "flatnet_plan": plan, "inventory_hostname": node,
                 "flatnet_cni": cni, "flatnet_cni_query": cni_query,
                 "_flatnet_vxlan_peers": [p["name"] for p in peer_views.peers_of(plan, node) if p["mode"] == "vxlan"]}
    if firewall is not None:
        variables["flatnet_firewall"] = firewall
    variables.update({k: trust_as_template(v) for k, v in OLD_VARS.items()})
    templar = Templar(loader=DataLoader(), variables=variables)
    passed = all(templar.template(trust_as_template("{{ " + c + " }}")) for c in OLD_THAT)
    return (not passed), templar.template(trust_as_template(OLD_FAIL_MSG))


FACTS = st.fixed_dictionaries({
    "kernel": st.fixed_dictionaries({
        "vxlan": st.sampled_from([True, False]),
        "nft": st.sampled_from([True, False, None, "/usr/sbin/nft"]),
        "ipv6": st.sampled_from([True, False]),
        "bridge_nf_call_iptables": st.sampled_from([None, "0", "1"]),
    }),
    "programs": st.fixed_dictionaries({p: st.booleans() for p in ("dnsmasq", "bird", "birdc")}),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=FACTS, kind=st.sampled_from(["host-gw", "dual", "bgp"]), node=st.sampled_from(["node1", "node3"]),
       firewall=st.sampled_from([None, True, False, "no", "yes"]), cni=st.sampled_from([True, False, "yes"]),
       cni_query=st.sampled_from([{"plugin_dir": "/opt/cni/bin", "missing_plugins": []},
                                  {"plugin_dir": None, "missing_plugins": ["/opt/cni/bin", "/usr/lib/cni"]}]))
def test_message_is_the_one_the_role_built(facts, kind, node, firewall, cni, cni_query):
    plan = _plan(kind)
    if node not in plan["nodes"]:
        node = "node2"
    failed, old_message = _old(copy.deepcopy(facts), plan, node, firewall, cni, cni_query)
    kwargs = {"cni": cni, "cni_query": cni_query}
    if firewall is not None:  # the role passes flatnet_firewall | default(true)
        kwargs["firewall"] = firewall
    got = _filter()(copy.deepcopy(facts), plan, node, **kwargs)
    assert (got != "") == failed
    if failed:
        assert got == old_message


def test_each_problem_and_its_fix():
    plan = _plan("dual")
    facts = {"kernel": {"vxlan": False, "nft": None, "ipv6": False, "bridge_nf_call_iptables": None},
             "programs": {"dnsmasq": False}}
    got = preflight.problems(facts, plan, "node1", cni=True, cni_query={"plugin_dir": None, "missing_plugins": ["/opt/cni/bin"]})
    assert got[0].startswith("it has VXLAN peers (node2, node3) but its kernel has no vxlan module")
    assert [p.split(":")[0] for p in got[1:]] == [
        "nft was not found", "IPv6 is disabled on it but the cluster CIDR has an IPv6 range",
        " CNI plugins (bridge, host-local, portmap, loopback) were not found in /opt/cni/bin",
        " It has no /usr/sbin/dnsmasq, which the cluster DNS pods run",
        " Services are declared (flatnet_services) but br_netfilter is not loaded (no "
        "/proc/sys/net/bridge/bridge-nf-call-iptables); a pod reaching a service endpoint on its own node would "
        "get no answer. Fix",
    ]
    ok = {"kernel": {"vxlan": True, "nft": "/usr/sbin/nft", "ipv6": True, "bridge_nf_call_iptables": "1"},
          "programs": {"dnsmasq": True}}
    assert preflight.message(ok, plan, "node1") == ""
    bgp = preflight.message(dict(ok, programs={"bird": True}), _plan("bgp"), "node1")
    assert bgp == ("node1 cannot run this plan:  It has no /usr/sbin/birdc, which flatnet_backend bgp runs: install the "
                   "Debian package bird2, or use another flatnet_backend.")


def test_filter_is_documented_and_refuses_what_is_not_facts_or_a_plan():
    doc = yaml.safe_load(preflight_message.DOCUMENTATION)
    assert doc["name"] == "preflight_message"
    assert yaml.safe_load(preflight_message.RETURN)["_value"] and yaml.safe_load(preflight_message.EXAMPLES)
    with pytest.raises(AnsibleFilterError, match="node's facts"):
        _filter()(None, _plan("host-gw"), "node1")
    with pytest.raises(AnsibleFilterError, match="plan must be the plan"):
        _filter()({}, {"nodes": []}, "node1")
    with pytest.raises(AnsibleFilterError, match="node9 is not in the plan"):
        _filter()({"kernel": {"vxlan": False}}, _plan("host-gw"), "node9")
