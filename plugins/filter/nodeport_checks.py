# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: nodeport_checks
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: The NodePort checks from outside the cluster, derived from the plan
description:
  - What the C(flatnet.cluster.verify) role's check of the node ports from outside the cluster
    needs - the NodePort services, every node's underlay address, and, when there is no place
    outside the cluster to run it from, one skipped result per node port (never a silent pass).
options:
  _input:
    description: The plan, C(flatnet_plan).
    type: dict
    required: true
  nodeport_from:
    description: Where the check runs (C(flatnet_verify_nodeport_from)); empty or V(null) when nowhere.
    type: dict
seealso:
  - module: flatnet.cluster.service_probe
"""

EXAMPLES = r"""
- name: Check the node ports of every node from the controller
  flatnet.cluster.service_probe:
    mode: outside
    services: "{{ _checks.services }}"
    nodes: "{{ _checks.targets }}"
  vars:
    _checks: "{{ flatnet_plan | flatnet.cluster.nodeport_checks({'host': 'localhost'}) }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_value:
  description: The NodePort checks.
  type: dict
  contains:
    services:
      description: The plan's services of type C(NodePort), in plan order.
      type: list
      elements: dict
    targets:
      description: Every node of the plan, sorted by name, as C({name, ip}) with its underlay IP.
      type: list
      elements: dict
    skipped:
      description:
        - Without O(nodeport_from), one result per node port in the form of M(flatnet.cluster.service_probe)'s
          results, C(skipped=true) with the reason; else empty.
      type: list
      elements: dict
  sample:
    services: []
    targets: [{"name": "node1", "ip": "192.168.50.11"}]
    skipped: []
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.verify_inputs import VerifyInputError, nodeport_checks


def _nodeport_checks(plan, nodeport_from=None):
    try:
        return nodeport_checks(plan, nodeport_from)
    except (VerifyInputError, KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError(f"nodeport_checks: {exc!r}") from None


class FilterModule:
    def filters(self):
        return {"nodeport_checks": _nodeport_checks}
