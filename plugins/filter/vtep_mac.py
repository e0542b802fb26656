# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: vtep_mac
author: flatnet maintainers (@flatnet)
version_added: 0.1.0
short_description: Stable VXLAN device MAC address of a node
description:
  - Derives the MAC address of a node's VXLAN device from its underlay IP address, so it stays
    the same across reruns, reboots and controllers.
  - The MAC is C(0e:) followed by the first 5 bytes of sha256(C(flatnet-vtep:) + address), a
    locally administered unicast address. The address is normalised first (IPv6 lower-case,
    compressed), so different spellings of one address give the same MAC.
options:
  _input:
    description: The node's underlay IP address, without prefix length.
    type: str
    required: true
seealso:
  - module: flatnet.cluster.plan
"""

EXAMPLES = r"""
- name: MAC of this node's VXLAN device
  ansible.builtin.debug:
    msg: "{{ flatnet_node.underlay.ip | flatnet.cluster.vtep_mac }}"
"""

RETURN = r"""
_value:
  description: The MAC address, lower-case, colon separated.
  type: str
  sample: 0e:85:ef:bc:8c:cc
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.node_blocks import vtep_mac
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


def _vtep_mac(underlay_ip):
    try:
        return vtep_mac(underlay_ip)
    except PlanError as exc:
        raise AnsibleFilterError(f"vtep_mac: {exc}") from None


class FilterModule:
    def filters(self):
        return {"vtep_mac": _vtep_mac}
