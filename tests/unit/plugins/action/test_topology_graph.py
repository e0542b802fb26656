# SPDX-License-Identifier: GPL-3.0-or-later
"""The topology_graph action: Graphviz refused by package name, files written once, drift returned."""
from __future__ import annotations

import json
import os
import shutil
from unittest.mock import MagicMock

import pytest
from ansible.playbook.play_context import PlayContext

from ansible_collections.flatnet.cluster.plugins.action import topology_graph
from ansible_collections.flatnet.cluster.plugins.action.topology_graph import ActionModule

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "plugin_utils", "fixtures", "lab_vxlan_live.json")


def run_action(args, task_vars=None):
    task = MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = False
    task.action = "flatnet.cluster.topology_graph"
    connection = MagicMock()
    action = ActionModule(task=task, connection=connection, play_context=PlayContext(),
                          loader=None, templar=None, shared_loader_obj=None)
    result = action.run(task_vars=task_vars or {})
    assert not connection.exec_command.called and not connection.put_file.called
    return result


@pytest.fixture()
def lab():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def test_without_dot_the_preflight_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(topology_graph, "dot_binary", lambda: None)
    res = run_action({"preflight": True, "svg_path": str(tmp_path / "t.svg")})
    assert res["failed"] and "install the graphviz package" in res["msg"]
    assert not (tmp_path / "t.svg").exists()


def test_bad_paths_are_refused(tmp_path):
    res = run_action({"preflight": True, "dot_path": str(tmp_path)})
    assert res["failed"] and "dot_path" in res["msg"] and "directory" in res["msg"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed (Debian package graphviz)")
def test_writes_svg_and_dot_once_and_returns_the_drift(lab, tmp_path):
    svg, dot = tmp_path / "out" / "c-topology.svg", tmp_path / "out" / "c-topology.dot"
    args = {"states": lab["live"], "plan": lab["plan"], "svg_path": str(svg), "dot_path": str(dot), "title": "c"}
    first = run_action(args)
    assert first["changed"] and first["drift"] == [] and svg.read_text().lstrip().startswith("<?xml")
    assert dot.read_text() == first["dot"]
    again = run_action(args)
    assert not again["changed"]
    lab["live"]["node2"]["routes"] = [r for r in lab["live"]["node2"]["routes"] if r["protocol"] != "157"]
    broken = run_action(dict(args, states=lab["live"]))
    assert broken["changed"] and len(broken["drift"]) == 3
    assert all(d.startswith("node2: route ") and d.endswith("route missing") for d in broken["drift"])
