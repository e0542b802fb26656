# SPDX-License-Identifier: GPL-3.0-or-later
"""The rerun with the cached plan (issue 16: no slower than the first run).

A rerun takes a node's cached pod addresses through a shortcut (_unchanged_pod_ips) when they
are exactly what the plan would keep, and through the generic path (_assign_pod_ips) otherwise.
These tests hold the shortcut to the generic path's answer, including on hand-edited caches,
and check that the integer-op parsers and formatters agree with netaddr.
"""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork

from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan, node_blocks, pod_addresses
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def _nodes(count=3, pods=4, prefix=24, records=None):
    nodes = {}
    for i in range(count):
        name = f"node{i}"
        nodes[name] = {
            "underlay": {"interface": "eth0", "ip": f"192.168.50.{10 + i}", "prefix": 24,
                         "network": "192.168.50.0/24", "mtu": 1500},
            "recorded": (records or {}).get(name, {}),
            "pods": [f"{name}-p{j}" for j in range(pods)],
        }
    return nodes


def _generic(monkeypatch):
    """Switch the shortcut off: every node takes the generic path."""
    monkeypatch.setattr(pod_addresses, "_unchanged_pod_ips", lambda *a, **k: None)


def test_rerun_takes_the_shortcut_and_changes_nothing(monkeypatch):
    first = cluster_plan.build_plan(_nodes(), node_prefix=26)
    calls = []
    real = pod_addresses._unchanged_pod_ips

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(pod_addresses, "_unchanged_pod_ips", spy)
    again = cluster_plan.build_plan(_nodes(), node_prefix=26, cached=json.loads(cluster_plan.plan_json(first)))
    assert cluster_plan.plan_json(again) == cluster_plan.plan_json(first)
    assert len(calls) == 3 and all(c is not None for c in calls)


def test_rerun_with_records_equal_to_the_cache_takes_the_shortcut():
    first = cluster_plan.build_plan(_nodes())
    records = {n: {"pod_cidrs": e["pod_cidrs"], "pods": {p["name"]: [p["ips"][0].split("/")[0]] for p in e["pods"]}}
               for n, e in first["nodes"].items()}
    block = IPNetwork(first["nodes"]["node1"]["pod_cidrs"][0])
    pods = [p["name"] for p in first["nodes"]["node1"]["pods"]]
    claims = [("recorded", records["node1"]["pods"]), ("cached", first["nodes"]["node1"]["pods"])]
    assert pod_addresses._unchanged_pod_ips([block], pods, claims) == {p["name"]: p["ips"] for p in first["nodes"]["node1"]["pods"]}
    assert cluster_plan.build_plan(_nodes(records=records), cached=first) == first


def _edit(plan, how):
    """A hand edit of node1's cached pods."""
    plan = copy.deepcopy(plan)
    pods = plan["nodes"]["node1"]["pods"]
    if how == "duplicate address":
        pods[1]["ips"] = list(pods[0]["ips"])
    elif how == "leading zero":
        pods[0]["ips"] = [pods[0]["ips"][0].replace(".2/", ".02/")]
    elif how == "gateway address":
        pods[0]["ips"] = [plan["nodes"]["node1"]["gateways"][0]]
    elif how == "broadcast":
        pods[0]["ips"] = [pods[0]["ips"][0].rsplit(".", 1)[0] + ".255/24"]
    elif how == "other block":
        pods[0]["ips"] = [plan["nodes"]["node2"]["pods"][3]["ips"][0]]
    elif how == "wrong prefix":
        pods[0]["ips"] = [pods[0]["ips"][0].replace("/24", "/16")]
    elif how == "bare address":
        pods[0]["ips"] = [pods[0]["ips"][0].split("/")[0]]
    elif how == "not a string":
        pods[0]["ips"] = [17]
    elif how == "not a list":
        pods[0]["ips"] = pods[0]["ips"][0]
    elif how == "two addresses":
        pods[0]["ips"] = pods[0]["ips"] + pods[1]["ips"]
    elif how == "unsorted":
        pods.reverse()
    elif how == "renamed pod":
        pods[0]["name"] = "ghost"
    elif how == "missing pod":
        del pods[0]
    elif how == "no ips key":
        del pods[0]["ips"]
    elif how == "space":
        pods[0]["ips"] = [" " + pods[0]["ips"][0]]
    elif how == "block moved":
        plan["nodes"]["node1"]["pod_cidrs"] = ["10.244.9.0/24"]
    elif how == "pods not a list":
        plan["nodes"]["node1"]["pods"] = {"x": 1}
    elif how == "pod entry not a mapping":
        pods[0] = "node1-p0"
    return plan


EDITS = ["duplicate address", "leading zero", "gateway address", "broadcast", "other block", "wrong prefix",
         "bare address", "not a string", "not a list", "two addresses", "unsorted", "renamed pod", "missing pod",
         "no ips key", "space", "block moved", "pods not a list", "pod entry not a mapping"]


@pytest.mark.parametrize("how", EDITS)
def test_a_hand_edited_cache_gets_the_generic_answer(how, monkeypatch):
    first = cluster_plan.build_plan(_nodes())
    edited = _edit(first, how)
    fast = cluster_plan.build_plan(_nodes(), cached=copy.deepcopy(edited))
    _generic(monkeypatch)
    slow = cluster_plan.build_plan(_nodes(), cached=copy.deepcopy(edited))
    assert fast == slow
    addresses = [ip for p in fast["nodes"]["node1"]["pods"] for ip in p["ips"]]
    assert len(set(addresses)) == len(addresses)
    block = IPNetwork(fast["nodes"]["node1"]["pod_cidrs"][0])
    for text in addresses:
        ip = IPNetwork(text)
        assert str(ip) == text and ip.prefixlen == block.prefixlen and ip.ip in block
        assert int(ip.ip) not in (block.first, block.first + 1, block.last)


def test_records_that_disagree_win_over_the_cache(monkeypatch):
    first = cluster_plan.build_plan(_nodes())
    pods = first["nodes"]["node1"]["pods"]
    # The node says p0 holds what the cache gives p1 (and the reverse): the records decide.
    records = {"node1": {"pods": {pods[0]["name"]: [pods[1]["ips"][0].split("/")[0]],
                                  pods[1]["name"]: [pods[0]["ips"][0].split("/")[0]]}}}
    plan = cluster_plan.build_plan(_nodes(records=records), cached=first)
    got = {p["name"]: p["ips"] for p in plan["nodes"]["node1"]["pods"]}
    assert got[pods[0]["name"]] == pods[1]["ips"] and got[pods[1]["name"]] == pods[0]["ips"]
    _generic(monkeypatch)
    assert cluster_plan.build_plan(_nodes(records=records), cached=first) == plan


def test_a_hand_edited_block_of_a_node_outside_the_play_is_still_refused():
    first = cluster_plan.build_plan(_nodes())
    edited = copy.deepcopy(first)
    edited["nodes"]["node2"]["pod_cidrs"] = list(first["nodes"]["node1"]["pod_cidrs"])  # node1's block
    with pytest.raises(PlanError, match=r"10\.244\.1\.0/24 is wanted by node2 \(cached plan; node not in this play\) "
                                        r"but node1 already has it"):
        cluster_plan.build_plan({"node0": _nodes()["node0"]}, cached=edited, inventory_nodes=["node0", "node1", "node2"])
    edited["nodes"]["node2"]["pod_cidrs"] = ["10.244.2.1/24"]
    with pytest.raises(PlanError, match=r"pod CIDR of node2 \(cached plan; node not in this play\) 10\.244\.2\.1/24 "
                                        r"is a host address"):
        cluster_plan.build_plan({"node0": _nodes()["node0"]}, cached=edited, inventory_nodes=["node0", "node2"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(prefix=st.integers(24, 29), pods=st.integers(0, 5), edits=st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from(["swap", "drop", "dup", "offset", "noise"]), st.integers(0, 300)),
    max_size=4))
def test_property_shortcut_equals_generic_path(prefix, pods, edits, monkeypatch):
    block = IPNetwork(f"10.9.8.{64 if prefix > 25 else 0}/{prefix}")  # aligned: not the first block
    names = [f"p{i}" for i in range(pods)]
    usable = block.size - 3
    if pods > usable:
        return
    base = pod_addresses._assign_pod_ips("n", [block], names, {}, [("recorded", {}), ("cached", [])])
    cached = [{"name": n, "ips": list(base[n])} for n in names]
    for index, op, value in edits:
        if not cached:
            break
        entry = cached[index % len(cached)]
        if op == "swap":
            other = cached[value % len(cached)]
            entry["ips"], other["ips"] = other["ips"], entry["ips"]
        elif op == "drop":
            cached.remove(entry)
        elif op == "dup":
            entry["ips"] = list(cached[value % len(cached)]["ips"])
        elif op == "offset":
            entry["ips"] = [f"10.9.8.{value % 256}/{prefix}"]
        else:
            entry["ips"] = [f"10.9.8.{value}/{prefix}"]
    claims = [("recorded", {}), ("cached", cached)]
    fast = pod_addresses._assign_pod_ips("n", [block], names, {}, copy.deepcopy(claims))
    monkeypatch.setattr(pod_addresses, "_unchanged_pod_ips", lambda *a, **k: None)
    try:
        slow = pod_addresses._assign_pod_ips("n", [block], names, {}, copy.deepcopy(claims))
    finally:
        monkeypatch.undo()
    assert fast == slow


@given(st.integers(0, 2**32 - 1))
def test_address_formatting_matches_netaddr(value):
    assert node_blocks._address(value, 4) == str(IPAddress(value, 4))


@given(st.integers(0, 32), st.integers(0, 2**32 - 1))
def test_canonical_block_parse_matches_netaddr(prefix, value):
    net = IPNetwork(f"{IPAddress(value, 4)}/{prefix}")
    text = f"{IPAddress(value, 4)}/{prefix}"
    got = node_blocks._canonical_block(text)
    if net.ip != net.network:
        assert got is None  # host bits: parse_network judges (and names) it
    else:
        assert got is not None and (got.first, got.prefixlen, got.version) == (net.first, prefix, 4)


@pytest.mark.parametrize("text", ["10.244.0.0/024", "10.244.00.0/24", "10.244.0.0/ 24", " 10.244.0.0/24",
                                  "10.244.0.0/33", "10.244.0.0/²", "10.244.0.0", "FD00::/64", "fd00:0::/64",
                                  "10.244.0.0/24/1", 17, None])
def test_canonical_block_refuses_what_is_not_written_by_the_plan(text):
    assert node_blocks._canonical_block(text) is None
