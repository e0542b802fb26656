# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: verify_sources
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: What a node's verification probes from and as, derived from the plan
description:
  - The sources of M(flatnet.cluster.probe) and M(flatnet.cluster.service_probe) on one node (its
    pods, then the containers attached through CNI), those containers as probe targets and for the
    report, and the addresses the node may show up as. The C(flatnet.cluster.verify) role calls it
    once per node.
options:
  _input:
    description: The plan, C(flatnet_plan).
    type: dict
    required: true
  node:
    description: The node, a key of the plan's C(nodes).
    type: str
    required: true
  containers:
    description:
      - The containers M(flatnet.cluster.cni) found on the node (its C(containers) with O(flatnet.cluster.cni#module:state=query));
        only those with a live network namespace (C(netns)) count.
    type: list
    elements: dict
    default: []
seealso:
  - module: flatnet.cluster.probe
  - plugin: flatnet.cluster.probe_targets
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Probe the network model from this node
  flatnet.cluster.probe:
    node: "{{ inventory_hostname }}"
    local_pods: "{{ _sources.local_pods }}"
    node_ips: "{{ _sources.node_ips }}"
    target_lines: "{{ flatnet_plan | flatnet.cluster.probe_targets(lines=true) }}"
  vars:
    _sources: "{{ flatnet_plan | flatnet.cluster.verify_sources(inventory_hostname, flatnet_cni_query.containers) }}"
"""

RETURN = r"""
_value:
  description: The node's probe sources and addresses.
  type: dict
  contains:
    local_pods:
      description:
        - The sources of the pod checks, the node's pods C({name, ips}) in plan order, then its attached
          containers C({name, ips}) (C(name) is the container's network namespace, C(ips) its address
          with the prefix of the node's pod CIDR of its family).
      type: list
      elements: dict
    containers:
      description: The attached containers, C({netns, container_id, ip}).
      type: list
      elements: dict
    container_targets:
      description: The attached containers as probe targets, C({node, pod, ip}) (C(pod) is the network namespace).
      type: list
      elements: dict
    node_ips:
      description:
        - The addresses the node may show up as, without prefix - its underlay IP, its gateways, its VTEP
          addresses (docs/verification.md, "Source addresses"); each once.
      type: list
      elements: str
  sample:
    local_pods: [{"name": "node1-pod-1", "ips": ["10.244.0.2/24"]}]
    containers: []
    container_targets: []
    node_ips: ["192.168.50.11", "10.244.0.1", "10.244.0.0"]
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.verify_inputs import VerifyInputError, verify_sources


def _verify_sources(plan, node, containers=None):
    try:
        return verify_sources(plan, node, containers)
    except VerifyInputError as exc:
        raise AnsibleFilterError(f"verify_sources: {exc}") from None


class FilterModule:
    def filters(self):
        return {"verify_sources": _verify_sources}
