# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: preflight_message
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: What keeps a node from running the plan, in one message
description:
  - Checks what the plan needs from one node's kernel and programs, as M(flatnet.cluster.node_facts)
    read them - the vxlan module when the node has VXLAN peers, nft with the firewall, IPv6 with an
    IPv6 cluster range, the CNI plugins with O(cni), dnsmasq for the cluster DNS, br_netfilter with
    services, BIRD 2 with the bgp backend.
  - Returns the empty string when the node can run the plan, else one message that names every
    problem and its fix. The C(flatnet.cluster.plan) role asserts it is empty before any node is changed.
options:
  _input:
    description: The node's facts, C(ansible_facts.flatnet_node) (its C(kernel) and C(programs)).
    type: dict
    required: true
  plan:
    description: The plan, C(flatnet_plan).
    type: dict
    required: true
  node:
    description: The node, a key of the plan's C(nodes).
    type: str
    required: true
  firewall:
    description: Whether the node runs the firewall (C(flatnet_firewall)).
    type: bool
    default: true
  cni:
    description: Whether CNI is on (C(flatnet_cni)).
    type: bool
    default: false
  cni_query:
    description: What M(flatnet.cluster.cni) with O(flatnet.cluster.cni#module:state=query) found on the node.
    type: dict
    default: {}
seealso:
  - module: flatnet.cluster.node_facts
"""

EXAMPLES = r"""
- name: Check that this node can run what the plan asks of it
  ansible.builtin.assert:
    that: _problem | length == 0
    fail_msg: "{{ _problem }}"
    quiet: true
  vars:
    _problem: "{{ ansible_facts.flatnet_node | flatnet.cluster.preflight_message(flatnet_plan, inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: The empty string, or C(<node> cannot run this plan:) followed by every problem and its fix.
  type: str
  sample: "node1 cannot run this plan: nft was not found: install the nftables package or set flatnet_firewall: false. "
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError
from ansible_collections.flatnet.cluster.plugins.plugin_utils.preflight import message


def _preflight_message(node_facts, plan, node, firewall=True, cni=False, cni_query=None):
    if not isinstance(node_facts, Mapping):
        raise AnsibleFilterError("preflight_message: the input must be the node's facts (ansible_facts.flatnet_node)")
    if not isinstance(plan, Mapping) or not isinstance(plan.get("nodes"), Mapping):
        raise AnsibleFilterError("preflight_message: plan must be the plan (flatnet_plan), a mapping with 'nodes'")
    try:
        return message(node_facts, plan, node, firewall, cni, cni_query)
    except PlanError as exc:
        raise AnsibleFilterError(f"preflight_message: {exc}") from None


class FilterModule:
    def filters(self):
        return {"preflight_message": _preflight_message}
