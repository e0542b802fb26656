# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: bgp_of
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: One node's BGP view (sessions, announced and accepted prefixes), derived from the plan
description:
  - For a plan with C(backend) V(bgp) (made by M(flatnet.cluster.plan)), what BIRD on one node
    needs - its router id (underlay IPv4), AS number, timers, the pod CIDRs it announces, its
    BGP sessions and, for each prefix it may learn, the one next hop it may come from.
  - Sessions only run between nodes on one underlay subnet (their C(peers_of) mode is V(bgp)).
    Without route reflectors on that subnet they form a full mesh (C(role) V(mesh)); a
    reflector peers with every node of its subnet (C(rr_client) for the non-reflectors); a
    client peers only with the reflectors of its subnet.
  - The same plugin file provides C(bgp_check_results) (the verify results of a node's BGP state).
options:
  _input:
    description: The plan, C(flatnet_plan).
    type: dict
    required: true
  node:
    description: The node (usually C(inventory_hostname)).
    type: str
    required: true
seealso:
  - module: flatnet.cluster.bgp
  - module: flatnet.cluster.plan
"""

EXAMPLES = r"""
- name: Configure BIRD for this node
  flatnet.cluster.bgp:
    config: "{{ flatnet_plan | flatnet.cluster.bgp_of(inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: The node's BGP view.
  type: dict
  sample:
    router_id: 192.168.50.11
    asn: 64512
    hold_time: 9
    keepalive_time: 3
    pod_cidrs: [10.244.0.0/24]
    cluster_cidrs: [10.244.0.0/16]
    role: mesh
    rr_cluster_id: null
    sessions: [{name: node2, address: 192.168.50.12, rr_client: false}]
    accept: [{node: node2, prefix: 10.244.1.0/24, next_hop: 192.168.50.12}]
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.bgp_plan import bgp_of, check_results
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def _bgp_of(plan, node):
    if not isinstance(plan, Mapping) or not isinstance(plan.get("nodes"), Mapping):
        raise AnsibleFilterError(f"bgp_of: the input is not a flatnet plan (no 'nodes' mapping): {type(plan).__name__}")
    try:
        return bgp_of(plan, str(node))
    except (PlanError, ValueError, KeyError) as exc:
        raise AnsibleFilterError(f"bgp_of: {exc}") from None


def _bgp_check_results(query, plan, node):
    if not isinstance(query, Mapping):
        raise AnsibleFilterError(f"bgp_check_results: the input is not a flatnet.cluster.bgp query result: {type(query).__name__}")
    try:
        return check_results(query, plan, str(node))
    except (PlanError, ValueError, KeyError) as exc:
        raise AnsibleFilterError(f"bgp_check_results: {exc}") from None


class FilterModule:
    def filters(self):
        # bgp_check_results is documented in bgp_check_results.yml.
        return {"bgp_of": _bgp_of, "bgp_check_results": _bgp_check_results}
