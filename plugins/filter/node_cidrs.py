# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: node_cidrs
author: flatnet maintainers (@flatnet)
version_added: 0.1.0
short_description: Plan one pod CIDR per node inside a cluster CIDR
description:
  - Splits the cluster CIDR into node blocks and gives each node one block per address family,
    with the same rules as M(flatnet.cluster.plan).
  - Nodes are served in sorted name order, each taking the lowest free block. Existing
    assignments never move; pins win over them.
  - Errors (bad CIDR, overlap with a reserved range, too many nodes, a bad pin) fail the task
    with one message naming the value and the fix.
positional: nodes
options:
  _input:
    description:
      - The cluster CIDR, for example V(10.244.0.0/16), or a list of one IPv4 and one IPv6 CIDR
        for dual-stack.
    type: raw
    required: true
  nodes:
    description: Names of the nodes that need a block (a mapping is read by its keys).
    type: raw
    required: true
  prefix:
    description: Prefix length of an IPv4 node block.
    type: int
    default: 24
  prefix_v6:
    description: Prefix length of an IPv6 node block; at most 16 bits longer than the cluster prefix.
    type: int
    default: 64
  existing:
    description:
      - Blocks nodes already use, as a mapping of node name to a CIDR or a list of CIDRs.
        They are kept; one outside the cluster CIDR is an error (tear the node down first).
    type: dict
  reserved:
    description: Ranges the cluster CIDR must not overlap (service CIDR, underlay networks, others).
    type: list
    elements: str
  pins:
    description: Blocks chosen by hand, as a mapping of node name to a CIDR or a list of CIDRs.
    type: dict
seealso:
  - module: flatnet.cluster.plan
  - plugin: flatnet.cluster.pod_ips
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Three nodes in the default cluster CIDR
  ansible.builtin.debug:
    msg: "{{ '10.244.0.0/16' | flatnet.cluster.node_cidrs(['node1', 'node2', 'node3']) }}"
  # => {"node1": ["10.244.0.0/24"], "node2": ["10.244.1.0/24"], "node3": ["10.244.2.0/24"]}

- name: Dual-stack, keeping node2's block and pinning node3
  ansible.builtin.debug:
    msg: >-
      {{ ['10.244.0.0/16', 'fd00:10:244::/56']
         | flatnet.cluster.node_cidrs(groups['cluster'], prefix=25,
                                      existing={'node2': ['10.244.0.0/25', 'fd00:10:244::/64']},
                                      pins={'node3': '10.244.9.0/25'}) }}
"""

RETURN = r"""
_value:
  description:
    - Mapping of node name to its list of pod CIDRs, one per cluster family, IPv4 first.
  type: dict
  sample: {"node1": ["10.244.0.0/24", "fd00:10:244::/64"]}
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.node_blocks import node_cidrs
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def _node_cidrs(cluster_cidr, nodes, prefix=24, prefix_v6=64, existing=None, reserved=None, pins=None):
    try:
        return node_cidrs(cluster_cidr, nodes, prefix=prefix, prefix_v6=prefix_v6,
                          existing=existing, reserved=reserved, pins=pins)
    except PlanError as exc:
        raise AnsibleFilterError(f"node_cidrs: {exc}") from None


class FilterModule:
    def filters(self):
        return {"node_cidrs": _node_cidrs}
