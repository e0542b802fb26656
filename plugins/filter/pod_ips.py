# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: pod_ips
author: flatnet maintainers (@flatnet)
version_added: 0.1.0
short_description: Plan pod addresses inside a node's pod CIDR
description:
  - Gives each pod one address per node block, with the same rules as M(flatnet.cluster.plan).
  - The network address (the VTEP address) and the first host address (the gateway on the
    bridge) are never given to a pod, nor the IPv4 broadcast address. Pods are served in
    sorted name order from the next free address upward.
  - Existing addresses that are still inside the block are kept. A pinned address is honoured
    or refused with the reason (outside the block, gateway, VTEP or broadcast address, pinned twice).
positional: pods
options:
  _input:
    description: The node's pod CIDR, or a list of one IPv4 and one IPv6 CIDR.
    type: raw
    required: true
  pods:
    description:
      - Pod names. Each must be a DNS label (C([a-z0-9]) and C(-), at most 63 characters)
        because it becomes a network namespace name.
    type: list
    elements: str
    required: true
  existing:
    description: Addresses pods already have, as a mapping of pod name to an address or a list.
    type: dict
  pins:
    description: Addresses chosen by hand, as a mapping of pod name to an address or a list.
    type: dict
seealso:
  - module: flatnet.cluster.plan
  - plugin: flatnet.cluster.node_cidrs
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Two pods on a node
  ansible.builtin.debug:
    msg: "{{ '10.244.1.0/24' | flatnet.cluster.pod_ips(['web', 'db']) }}"
  # => {"db": ["10.244.1.2/24"], "web": ["10.244.1.3/24"]}

- name: Dual-stack, pinning the IPv4 address of one pod
  ansible.builtin.debug:
    msg: >-
      {{ ['10.244.1.0/24', 'fd00:10:244:1::/64']
         | flatnet.cluster.pod_ips(['web', 'db'], pins={'web': '10.244.1.80'}) }}
"""

RETURN = r"""
_value:
  description:
    - Mapping of pod name to its addresses with the node block's prefix, one per family, IPv4 first.
  type: dict
  sample: {"web": ["10.244.1.2/24", "fd00:10:244:1::2/64"]}
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError
from ansible_collections.flatnet.cluster.plugins.plugin_utils.pod_addresses import pod_ips


def _pod_ips(node_cidr, pods, existing=None, pins=None):
    try:
        return pod_ips(node_cidr, pods, existing=existing, pins=pins)
    except PlanError as exc:
        raise AnsibleFilterError(f"pod_ips: {exc}") from None


class FilterModule:
    def filters(self):
        return {"pod_ips": _pod_ips}
