# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: peers_of
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: One node's view of its peers, derived from the plan
description:
  - The plan (C(flatnet_plan), made by M(flatnet.cluster.plan)) holds each node once. This
    filter derives what one node needs to reach every other node's pods, in time linear in the
    number of nodes, so the plan stays linear too.
  - Each peer is every other node of the plan, sorted by name, with how this node reaches it
    (C(mode)) - V(direct) (a route via the peer's underlay address, host-gw) or V(vxlan)
    (through the VXLAN device) - chosen from the plan's C(backend). With V(auto), a peer
    is direct when both underlay addresses are on-link for each other and IPv6 pods need no
    tunnel over an IPv4 underlay.
options:
  _input:
    description: The plan, C(flatnet_plan).
    type: dict
    required: true
  node:
    description: The node whose peers to list (usually C(inventory_hostname)).
    type: str
    required: true
  lines:
    description:
      - Return each peer as one peer line, C(NAME MODE UNDERLAY_IP POD_CIDRS VTEP_IPS VTEP_MAC)
        (lists joined with commas, V(-) for none), the compact form M(flatnet.cluster.peers)
        takes. Ansible handles one string per peer much faster than a mapping of six keys.
    type: bool
    default: false
  modes:
    description:
      - Only the peers reached this way (any of V(direct), V(vxlan), V(bgp)). The backend role
        passes V(direct) and V(vxlan); the peers that BIRD serves (V(bgp)) get no static route.
      - Unset, every peer.
    type: list
    elements: str
    version_added: 0.3.0
seealso:
  - module: flatnet.cluster.plan
  - module: flatnet.cluster.peers
"""

EXAMPLES = r"""
- name: Program this node's routes to its peers
  flatnet.cluster.peers:
    underlay_interface: "{{ flatnet_plan.nodes[inventory_hostname].underlay.interface }}"
    peers: "{{ flatnet_plan | flatnet.cluster.peers_of(inventory_hostname) }}"

- name: The same, with one string per peer (what the backend role passes)
  flatnet.cluster.peers:
    underlay_interface: "{{ flatnet_plan.nodes[inventory_hostname].underlay.interface }}"
    peers: "{{ flatnet_plan | flatnet.cluster.peers_of(inventory_hostname, lines=true) }}"

- name: The peers that get static routes or VXLAN entries (BIRD serves the bgp ones)
  flatnet.cluster.peers:
    underlay_interface: "{{ flatnet_plan.nodes[inventory_hostname].underlay.interface }}"
    peers: "{{ flatnet_plan | flatnet.cluster.peers_of(inventory_hostname, lines=true, modes=['direct', 'vxlan']) }}"

- name: The peers this node reaches through VXLAN
  ansible.builtin.debug:
    msg: "{{ flatnet_plan | flatnet.cluster.peers_of(inventory_hostname) | selectattr('mode', 'equalto', 'vxlan') | map(attribute='name') }}"
"""

RETURN = r"""
_value:
  description: The peers, sorted by name (strings with O(lines=true)).
  type: list
  elements: raw
  sample:
    - {name: node2, mode: direct, underlay_ip: 192.168.50.12, pod_cidrs: [10.244.1.0/24],
       vtep_ips: [10.244.1.0], vtep_mac: "0e:b4:f2:fb:1e:23"}
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.module_utils.peers_reconcile import PeersError, peer_line
from ansible_collections.flatnet.cluster.plugins.plugin_utils.peer_views import peers_of
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError


MODES = ("direct", "vxlan", "bgp")


def _peers_of(plan, node, lines=False, modes=None):
    if not isinstance(plan, Mapping) or not isinstance(plan.get("nodes"), Mapping):
        raise AnsibleFilterError(f"peers_of: the input is not a flatnet plan (no 'nodes' mapping): {type(plan).__name__}")
    if not isinstance(lines, bool):
        raise AnsibleFilterError(f"peers_of: lines must be true or false, not {lines!r}")
    if modes is not None:
        if not isinstance(modes, (list, tuple)) or not all(m in MODES for m in modes):
            raise AnsibleFilterError(f"peers_of: modes must be a list of {', '.join(MODES)}, not {modes!r}")
        modes = set(modes)
    try:
        peers = [p for p in peers_of(plan, str(node)) if modes is None or p["mode"] in modes]
        return [peer_line(peer) for peer in peers] if lines else peers
    except (PlanError, PeersError, ValueError) as exc:
        raise AnsibleFilterError(f"peers_of: {exc}") from None


class FilterModule:
    def filters(self):
        return {"peers_of": _peers_of}
