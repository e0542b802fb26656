# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import json
import os
from unittest.mock import MagicMock

import pytest
from ansible.errors import AnsibleActionFail
from ansible.playbook.play_context import PlayContext

from ansible_collections.flatnet.cluster.plugins.action.plan import ActionModule
from ansible_collections.flatnet.cluster.plugins.plugin_utils.cluster_plan import build_plan
from ansible_collections.flatnet.cluster.plugins.plugin_utils.peer_views import peers_of


def _underlay(ip):
    return {"interface": "eth0", "ip": ip, "prefix": 24, "network": "192.168.50.0/24", "mtu": 1500}


NODES = {
    "node1": {"underlay": _underlay("192.168.50.11"), "recorded": {}, "pod_cidr": None,
              "pods": [{"name": "web", "ip": None, "command": ["sleep", "60"]}]},
    "node2": {"underlay": _underlay("192.168.50.12"), "recorded": {}, "pod_cidr": None, "pods": []},
}


def run_action(args, check_mode=False):
    task = MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.action = "flatnet.cluster.plan"
    connection = MagicMock()
    action = ActionModule(task=task, connection=connection, play_context=PlayContext(),
                          loader=None, templar=None, shared_loader_obj=None)
    # The plugin loader sets this; 2.18 names it in its "Unsupported parameters" message.
    action._load_name = "flatnet.cluster.plan"
    result = action.run(task_vars={})
    # Nothing may run on the managed host: the action never touches its connection.
    assert not connection.exec_command.called and not connection.put_file.called
    return result


def test_plan_fact_matches_build_plan(tmp_path):
    result = run_action({"nodes": NODES, "backend": "auto"})
    assert result["changed"] is False
    assert not result.get("failed")
    got = dict(result["ansible_facts"]["flatnet_plan"])
    # The services part (plugin_utils/services_plan.py) comes on top of build_plan's.
    assert (got.pop("services"), got.pop("service_node_port_range"), got.pop("dns_ip")) == (
        [], [30000, 32767], "10.96.0.10")
    assert got.pop("dns") == {"ip": None, "domain": "cluster.local", "pods": []}
    assert got == build_plan(NODES, backend="auto")
    assert result["ansible_facts"]["flatnet_plan"]["nodes"]["node1"]["pods"][0] == {
        "name": "web", "ips": ["10.244.0.2/24"], "command": ["sleep", "60"]}


def test_defaults(tmp_path):
    plan = run_action({"nodes": NODES})["ansible_facts"]["flatnet_plan"]
    assert plan["cluster_cidrs"] == ["10.244.0.0/16"]
    assert plan["service_cidr"] == "10.96.0.0/12"
    assert plan["backend"] == "host-gw"
    assert plan["vxlan"] == {"vni": 1, "port": 8472, "device": "flatnet.1"}
    assert plan["masquerade"] is True


def test_plan_file_written_and_reused(tmp_path):
    path = tmp_path / "deep" / "dir" / "plan.json"
    first = run_action({"nodes": NODES, "plan_file": str(path)})
    assert first["plan_file_written"] is True
    assert json.loads(path.read_text()) == first["ansible_facts"]["flatnet_plan"]
    # One line per node: small, and a diff names the nodes that changed.
    node_lines = [line for line in path.read_text().splitlines() if line.startswith('    "node')]
    assert [line.split('"')[1] for line in node_lines] == ["node1", "node2"]
    mtime = os.stat(path).st_mtime_ns

    again = run_action({"nodes": NODES, "plan_file": str(path)})
    assert again["plan_file_written"] is False
    assert os.stat(path).st_mtime_ns == mtime

    # node2 left the play (--limit) but is still in the inventory: it keeps its block
    only1 = {"node1": NODES["node1"]}
    limited = run_action({"nodes": only1, "plan_file": str(path), "inventory_nodes": ["node1", "node2"]})
    plan = limited["ansible_facts"]["flatnet_plan"]
    assert plan["nodes"]["node2"] == first["ansible_facts"]["flatnet_plan"]["nodes"]["node2"]
    assert [p["name"] for p in peers_of(plan, "node1")] == ["node2"]

    # node2 removed from the inventory: dropped from the plan and from the file
    dropped = run_action({"nodes": only1, "plan_file": str(path), "inventory_nodes": ["node1"]})
    assert list(dropped["ansible_facts"]["flatnet_plan"]["nodes"]) == ["node1"]
    assert list(json.loads(path.read_text())["nodes"]) == ["node1"]
    assert not [p for p in os.listdir(path.parent) if p != "plan.json"]  # no temp files left


def test_as_fact_false_returns_the_same_plan_as_a_value_not_a_fact():
    as_fact = run_action({"nodes": NODES})
    value = run_action({"nodes": NODES, "as_fact": False})
    assert "ansible_facts" not in value
    assert value["plan"] == as_fact["ansible_facts"]["flatnet_plan"]
    assert "plan" not in as_fact
    failed = run_action({"nodes": NODES, "as_fact": False, "cluster_cidr": "10.244.1.5/16"})
    assert failed["failed"] is True and "plan" not in failed


def test_check_mode_does_not_write(tmp_path):
    path = tmp_path / "sub" / "plan.json"
    result = run_action({"nodes": NODES, "plan_file": str(path)}, check_mode=True)
    assert "flatnet_plan" in result["ansible_facts"]
    assert result["plan_file_written"] is False
    assert not path.exists() and not path.parent.exists()


def test_plan_error_is_one_message_and_nothing_written(tmp_path):
    path = tmp_path / "plan.json"
    result = run_action({"nodes": NODES, "cluster_cidr": "10.244.1.5/16", "plan_file": str(path)})
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"] == ("flatnet_cluster_cidr 10.244.1.5/16 is a host address, not a network; "
                             "did you mean 10.244.0.0/16?")
    assert "ansible_facts" not in result
    assert not path.exists()


def test_corrupt_plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    result = run_action({"nodes": NODES, "plan_file": str(path)})
    assert result["failed"] is True
    assert "cannot read the cached plan" in result["msg"] and "delete it" in result["msg"]
    assert path.read_text() == "{not json"


def test_unwritable_plan_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_action({"nodes": NODES, "plan_file": str(blocker / "plan.json")})
    assert result["failed"] is True
    assert "cannot write the plan file" in result["msg"]


@pytest.mark.parametrize("args,msg", [
    ({}, "missing required arguments: nodes"),
    ({"nodes": NODES, "bogus": 1}, "bogus"),
    ({"nodes": NODES, "as_fact": "maybe"}, "as_fact"),
    ({"nodes": NODES, "as_fact": [True]}, "as_fact"),
])
def test_option_validation(args, msg):
    with pytest.raises(AnsibleActionFail, match=msg):
        run_action(args)


# The planner checks these values itself, so that the message names the role variable.
@pytest.mark.parametrize("args,msg", [
    ({"backend": "flannel"}, "flatnet_backend 'flannel' is not supported; use one of: host-gw, vxlan, auto"),
    ({"node_prefix": "big"}, "flatnet_node_prefix 'big' is not an integer"),
    ({"node_prefix": True}, "flatnet_node_prefix True is not an integer"),
    ({"masquerade": "maybe"}, "flatnet_masquerade 'maybe' is not a boolean; set it to true or false"),
    ({"mtu": "1400.5"}, "flatnet_mtu '1400.5' is not an integer"),
    ({"pods_per_node": -1}, "flatnet_pods_per_node -1 on node1 is out of range; use a count of 0 or more"),
    ({"bridge": "flatnet.1"}, "flatnet_bridge and flatnet_vxlan_device are both 'flatnet.1' on node1"),
    ({"cluster_name": "../etc"}, "flatnet_cluster_name '../etc' is not allowed: it becomes part of a file name"),
    ({"group": "all:!node1"}, "flatnet_group 'all:!node1' is not an inventory group name"),
    ({"plan_file": "/tmp/x\0y"}, "flatnet_plan_file '/tmp/x\\x00y' is not a usable file path"),
])
def test_checked_by_the_planner(args, msg):
    result = run_action(dict({"nodes": NODES}, **args))
    assert result["failed"] is True and result["changed"] is False
    assert msg in result["msg"]
    assert "ansible_facts" not in result


def test_plan_file_that_is_a_directory(tmp_path):
    result = run_action({"nodes": NODES, "plan_file": str(tmp_path)})
    assert result["failed"] is True
    assert f"flatnet_plan_file {tmp_path} is a directory" in result["msg"]


@pytest.mark.parametrize("text,value", [("yes", True), ("false", False), ("on", True), ("0", False)])
def test_boolean_spellings_of_extra_vars(text, value):
    # -e flatnet_masquerade=false gives the string "false": it must mean False, not a truthy string
    plan = run_action({"nodes": NODES, "masquerade": text})["ansible_facts"]["flatnet_plan"]
    assert plan["masquerade"] is value


def test_numbers_from_extra_vars_are_strings():
    nodes = {"node1": dict(NODES["node1"], pods_per_node="2"), "node2": NODES["node2"]}
    plan = run_action({"nodes": nodes, "mtu": "1400", "node_prefix": "25", "vxlan": {"port": "4789"},
                       "pods_per_node": "1"})["ansible_facts"]["flatnet_plan"]
    assert plan["mtu"] == 1400 and plan["vxlan"]["port"] == 4789
    assert plan["nodes"]["node1"]["pod_cidrs"] == ["10.244.0.0/25"]
    assert [p["name"] for p in plan["nodes"]["node1"]["pods"]] == ["node1-pod-1", "node1-pod-2", "web"]
    assert [p["name"] for p in plan["nodes"]["node2"]["pods"]] == ["node2-pod-1"]


def test_bridge_in_the_plan():
    nodes = {"node1": dict(NODES["node1"], bridge="br-pods"), "node2": NODES["node2"]}
    plan = run_action({"nodes": nodes, "bridge": "cni0"})["ansible_facts"]["flatnet_plan"]
    assert plan["nodes"]["node1"]["bridge"] == "br-pods"
    assert plan["nodes"]["node2"]["bridge"] == "cni0"


def test_vxlan_suboptions_and_range():
    plan = run_action({"nodes": NODES, "vxlan": {"vni": 42}})["ansible_facts"]["flatnet_plan"]
    assert plan["vxlan"] == {"vni": 42, "port": 8472, "device": "flatnet.1"}
    result = run_action({"nodes": NODES, "vxlan": {"port": 0}})
    assert result["failed"] is True and "flatnet_vxlan_port 0 is out of range" in result["msg"]


def test_a_bad_service_fails_the_plan_and_writes_nothing(tmp_path):
    plan_file = tmp_path / "plan.json"
    result = run_action({"nodes": NODES, "plan_file": str(plan_file),
                         "services": [{"name": "web", "ports": [{"port": 80, "protocol": "icmp"}]}]})
    assert result["failed"] and "protocol 'icmp' is not supported" in result["msg"]
    assert not plan_file.exists()


def test_service_allocations_are_cached_in_the_plan_file(tmp_path):
    plan_file = tmp_path / "plan.json"
    services = [{"name": "web", "type": "NodePort", "ports": [{"port": 80}]}]
    first = run_action({"nodes": NODES, "plan_file": str(plan_file), "services": services})
    assert json.loads(plan_file.read_text())["services"][0]["cluster_ip"] == "10.96.0.1"
    services = [{"name": "aaa", "ports": [{"port": 80}]}] + services
    second = run_action({"nodes": NODES, "plan_file": str(plan_file), "services": services})
    got = {s["name"]: s for s in second["ansible_facts"]["flatnet_plan"]["services"]}
    assert got["web"] == first["ansible_facts"]["flatnet_plan"]["services"][0]
    assert got["aaa"]["cluster_ip"] == "10.96.0.2"
