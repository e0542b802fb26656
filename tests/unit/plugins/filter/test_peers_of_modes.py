# SPDX-License-Identifier: GPL-3.0-or-later
"""peers_of(modes=...): the backend role's peer lines by mode, the same as the regex that
dropped the bgp lines gave, on every backend; a bad ``modes`` is refused by name."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.flatnet.cluster.plugins.filter import peers_of
from ansible_collections.flatnet.cluster.plugins.plugin_utils import cluster_plan
from ansible_collections.flatnet.cluster.tests.unit.compat import trust_as_template

PEERS_OF = peers_of.FilterModule().filters()["peers_of"]

# roles/backend/tasks/main.yml before modes= (the peer lines through this regex), and the role now:
#   peers_of(inventory_hostname, lines=true, modes=['direct', 'vxlan'])
OLD = "{{ _lines | reject('search', '^[^ ]+ bgp ') | list }}"


def _nodes():
    """Two nodes on one subnet, two on another: bgp within a subnet, vxlan across."""
    nodes = {}
    for i, (ip, net) in enumerate([("192.168.50.11", "192.168.50.0/24"), ("192.168.50.12", "192.168.50.0/24"),
                                   ("192.168.60.13", "192.168.60.0/24"), ("192.168.60.14", "192.168.60.0/24")]):
        nodes[f"node{i + 1}"] = {"underlay": {"interface": "eth0", "ip": ip, "prefix": 24, "network": net,
                                              "mtu": 1500}, "recorded": {}, "pods": []}
    return nodes


@pytest.mark.parametrize("backend", ["bgp", "vxlan", "host-gw", "auto"])
def test_modes_gives_what_the_regex_gave(backend):
    nodes = _nodes()
    if backend == "host-gw":
        for entry in nodes.values():
            entry["underlay"].update(network="192.168.0.0/16", prefix=16)
    plan = cluster_plan.build_plan(nodes, backend=backend)
    seen_bgp = False
    for name in plan["nodes"]:
        templar = Templar(loader=DataLoader(), variables={"_lines": PEERS_OF(plan, name, lines=True)})
        old = templar.template(trust_as_template(OLD))
        assert PEERS_OF(plan, name, lines=True, modes=["direct", "vxlan"]) == old
        assert len(old) == (2 if backend == "bgp" else 3)  # bgp: the other subnet's two, through VXLAN
        seen_bgp = seen_bgp or any(" bgp " in line for line in PEERS_OF(plan, name, lines=True))
    assert seen_bgp == (backend == "bgp")


def test_modes_selects_by_mode():
    plan = cluster_plan.build_plan(_nodes(), backend="bgp")
    assert [p["name"] for p in PEERS_OF(plan, "node1", modes=["bgp"])] == ["node2"]
    assert [p["name"] for p in PEERS_OF(plan, "node1", modes=["vxlan"])] == ["node3", "node4"]
    assert PEERS_OF(plan, "node1", modes=[]) == []
    assert PEERS_OF(plan, "node1", modes=None) == PEERS_OF(plan, "node1")


@pytest.mark.parametrize("modes", ["direct", ["tunnel"], [None], 3])
def test_bad_modes_are_refused_by_name(modes):
    plan = cluster_plan.build_plan(_nodes(), backend="bgp")
    with pytest.raises(AnsibleFilterError, match=r"peers_of: modes must be a list of direct, vxlan, bgp"):
        PEERS_OF(plan, "node1", modes=modes)
