# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The code is the action plugin plugins/action/topology_graph.py; this file only documents it.
from __future__ import annotations

DOCUMENTATION = r"""
module: topology_graph
short_description: Draw the live pod network of a cluster as an SVG, with drift against the plan marked
version_added: 0.2.0
author: flatnet maintainers (@flatnet)
description:
  - Runs on the controller only (use it with C(run_once)). It takes what
    M(flatnet.cluster.topology) read on every node and draws the cluster with Graphviz C(dot) -
    the underlay subnets and the router between them (when nodes reach each other through a
    gateway), each node with its underlay IP, bridge, gateway and VXLAN device, every pod with
    its address and state (above O(pod_limit) pods on a node, a summary and the pods with
    drift), every route of the collection and, per node pair, the path (host-gw, or VXLAN with
    its VNI).
  - With O(plan), what differs from the plan is drift - a route missing, extra or different, a
    pod missing, down or not in the plan, a missing neighbour or FDB entry, a bridge or VXLAN
    device missing or down - marked in red in the picture, listed in a box of its own and
    returned in RV(drift).
  - The same live states and plan give the same DOT text, so an unchanged cluster leaves the
    files unchanged.
  - Needs Graphviz on the controller (Debian package C(graphviz)); without C(dot) the task
    fails naming the package. O(preflight=true) only checks that and the paths.
options:
  states:
    description:
      - The live states, a mapping node name to the RV(flatnet.cluster.topology#module:topology)
        of that node (null for a node that could not be read).
      - When omitted, the variable O(state_var) of every host in O(hosts) is read.
    type: dict
  hosts:
    description:
      - Hosts whose O(state_var) is read when O(states) is omitted; a host without it is drawn
        as a node without live state. By default C(ansible_play_hosts_all).
    type: list
    elements: str
  state_var:
    description: Host variable that holds a node's live state.
    type: str
    default: flatnet_topology
  plan:
    description: The C(flatnet_plan) fact. Without it nothing is drift and only the live state is drawn.
    type: dict
  title:
    description: Title of the picture; the counts and the drift total are added below it.
    type: str
    default: ""
  svg_path:
    description: Controller path of the SVG picture.
    type: path
  dot_path:
    description: Controller path of the Graphviz source (DOT) of the picture.
    type: path
  pod_limit:
    description: Above this many pods on a node, the node shows a summary instead of one row per pod.
    type: int
    default: 20
  preflight:
    description: Only check that C(dot) is there (when O(svg_path) is set) and that the paths are usable.
    type: bool
    default: false
extends_documentation_fragment:
  - flatnet.cluster.attributes.no_diff
  - flatnet.cluster.attributes.controller
attributes:
  check_mode:
    description: Draws the picture; the files are written in check mode too, like the verification reports.
seealso:
  - module: flatnet.cluster.topology
"""

EXAMPLES = r"""
- name: Read the live state of every node
  flatnet.cluster.topology:
    bridge: cni0
  register: live

- name: Keep it for the picture
  ansible.builtin.set_fact:
    flatnet_topology: "{{ live.topology }}"

- name: Draw the cluster
  flatnet.cluster.topology_graph:
    plan: "{{ flatnet_plan }}"
    title: flatnet cluster
    svg_path: "{{ inventory_dir }}/.flatnet/flatnet-topology.svg"
  run_once: true
  register: picture
"""

RETURN = r"""
drift:
  description: What differs from the plan, one line each, the node name first; empty without O(plan).
  returned: unless O(preflight)
  type: list
  elements: str
  sample: ["node1: route 10.244.1.0/24 via 192.168.50.12 dev eth0 (to node2): route missing"]
summary:
  description: Counts - C(nodes), C(pods), C(pods_up), C(routes), C(drift).
  returned: unless O(preflight)
  type: dict
  sample: {nodes: 4, pods: 12, pods_up: 12, routes: 12, drift: 0}
paths:
  description: One entry per node pair with a route either way - C(a), C(b), C(modes) (direct, vxlan), C(vnis), C(problems).
  returned: unless O(preflight)
  type: list
  elements: dict
router:
  description: Null, or C(gateways) - per underlay network, the gateways its nodes use to reach nodes on other networks.
  returned: unless O(preflight)
  type: dict
dot:
  description: The DOT text (unless O(preflight)), or the path of C(dot) (with O(preflight)).
  returned: always
  type: str
svg_path:
  description: Where the SVG was written.
  returned: unless O(preflight)
  type: str
dot_path:
  description: Where the DOT text was written.
  returned: unless O(preflight)
  type: str
"""
