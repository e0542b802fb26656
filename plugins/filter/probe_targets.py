# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: probe_targets
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: The pod addresses a node's verification probes, derived from the plan
description:
  - Lists the targets of M(flatnet.cluster.probe) from the plan (C(flatnet_plan)) in one pass
    over its node table, in time linear in the pods. The C(flatnet.cluster.verify) role calls it
    once per node; the same list built in Jinja costs the square of the pods per node (each
    appended item copies the list), which at 100 nodes x 10 pods took minutes.
  - By default every address of every pod of the plan, nodes sorted by name, pods in plan order,
    IPv4 before IPv6 as the plan lists them.
options:
  _input:
    description: The plan, C(flatnet_plan).
    type: dict
    required: true
  first_pods:
    description:
      - Instead, only the first pod of every node (nodes without pods are left out), the far
        ends of the path MTU check (M(flatnet.cluster.probe) skips its own node's).
    type: bool
    default: false
  lines:
    description:
      - Return each target as one line, C(NODE POD IP), the compact form that
        M(flatnet.cluster.probe) takes as O(flatnet.cluster.probe#module:target_lines). Ansible
        passes one string per target much faster than a mapping of three keys.
    type: bool
    default: false
seealso:
  - module: flatnet.cluster.probe
  - plugin: flatnet.cluster.peers_of
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Probe every pod of the cluster from this node
  flatnet.cluster.probe:
    node: "{{ inventory_hostname }}"
    local_pods: "{{ flatnet_plan.nodes[inventory_hostname].pods }}"
    target_lines: "{{ flatnet_plan | flatnet.cluster.probe_targets(lines=true) }}"

- name: The far ends of the path MTU check
  ansible.builtin.debug:
    msg: "{{ flatnet_plan | flatnet.cluster.probe_targets(first_pods=true) }}"
"""

RETURN = r"""
_value:
  description:
    - One entry per pod address, C({node, pod, ip}) with the address without its prefix
      (strings C(NODE POD IP) with O(lines=true)).
  type: list
  elements: raw
  sample: [{"node": "node1", "pod": "node1-pod-1", "ip": "10.244.0.2"}]
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def probe_targets(plan, first_pods=False, lines=False):
    if not isinstance(plan, Mapping) or not isinstance(plan.get("nodes"), Mapping):
        raise AnsibleFilterError("probe_targets: the input must be the plan (flatnet_plan), a mapping with 'nodes'")
    out = []
    for name in sorted(plan["nodes"]):
        pods = plan["nodes"][name].get("pods") or []
        if first_pods:
            pods = pods[:1]
        for pod in pods:
            for ip in pod.get("ips") or []:
                ip = str(ip).split("/", 1)[0]
                out.append(f"{name} {pod['name']} {ip}" if lines else {"node": name, "pod": pod["name"], "ip": ip})
    return out


class FilterModule:
    def filters(self):
        return {"probe_targets": probe_targets}
