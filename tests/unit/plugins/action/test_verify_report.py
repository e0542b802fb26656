# SPDX-License-Identifier: GPL-3.0-or-later
"""How the verify_report action gathers what the nodes' probe runs left in their host vars."""
from __future__ import annotations

from ansible_collections.flatnet.cluster.plugins.action.verify_report import collect

ARGS = {"results_var": "flatnet_probe_results", "table_fulls_var": "flatnet_probe_neighbour_table_fulls"}


def test_collect_reads_results_and_table_fulls_of_each_host():
    hostvars = {
        "n1": {"flatnet_probe_results": [{"check": "pod-pod"}],
               "flatnet_probe_neighbour_table_fulls": {"ipv4": 3}},
        "n2": {"flatnet_probe_results": []},
        "n3": {},
    }
    results, missing, fulls = collect(dict(ARGS, hosts=["n1", "n2", "n3"]), {"hostvars": hostvars})
    assert results == [[{"check": "pod-pod"}], []]
    assert missing == ["n3"]
    assert fulls == {"n1": {"ipv4": 3}}


def test_explicit_results_still_pick_up_table_fulls():
    hostvars = {"n1": {"flatnet_probe_neighbour_table_fulls": {"ipv4": 0}}}
    results, missing, fulls = collect(dict(ARGS, results=[["r"]], hosts=["n1"]), {"hostvars": hostvars})
    assert (results, missing, fulls) == ([["r"]], [], {"n1": {"ipv4": 0}})
