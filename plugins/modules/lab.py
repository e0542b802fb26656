#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lab
short_description: Build or destroy a local lab of simulated nodes for flatnet.cluster
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - Runs on the controller (C(localhost)) as root and creates or destroys a whole lab in one
    idempotent call. A lab stands in for a set of Linux hosts so that the collection can be
    tested end to end on one machine without touching the machine's own network.
  - A B(node) is a long-lived process in its own network, mount, UTS and PID namespaces
    (C(unshare)), with its own hostname, a private C(/run) and C(/tmp) (tmpfs), its own
    C(/sys), and overlays on C(/etc) and C(/var/lib) whose upper directories live under
    O(state_dir) and survive a node restart, like a disk. Reach a node with the
    P(flatnet.cluster.nsenter#connection) connection plugin and the node's pidfile.
  - C(/var/lib/flatnet), C(/etc/netns) and C(/etc/cni/net.d) of a node are its own (bind
    mounts of directories under C(<state_dir>/<name>/<node>/private), kept across restarts);
    a node starts with them empty and never sees the machine's.
  - When it starts a node, the module records the node's identity next to the pidfile in
    C(<state_dir>/<name>/<node>/identity.json) (root-only), namely its PID, start time, the boot id
    and the inodes of its network, mount, UTS and PID namespaces. The connection plugin
    enters only a process that matches this record. A running node without a matching
    record is recorded again by O(state=present).
  - The lab owns what its record says it made, never what merely carries its name. It writes
    a marker C(<state_dir>/<name>/lab.json) before it creates anything, and records there
    the namespaces it creates. An existing C(<state_dir>/<name>) without that marker (unless
    empty) and an existing C(<name>-net) or C(<name>-out) not recorded there are refused by
    both states, before anything is changed; the message names them and the fix.
  - The B(underlay) lives in one named network namespace C(<name>-net). It holds one bridge
    per subnet carrying the subnet gateway address, and has IPv4 forwarding on, so it is both
    the switch and the router between subnets. Each node gets a veth whose lab end is a port
    of its subnet's bridge and whose other end is the node's C(eth0), with the node's
    underlay address and a default route via the subnet gateway.
  - With O(outside), a namespace C(<name>-out) behind the router stands for the internet. It
    runs the collection's probe agent under the name C(outside), which tells callers which
    source address it saw (HTTP C(GET /clientip) on TCP 8083 answers C(IP:PORT), UDP 8081
    answers each datagram with C(outside <client-ip>)), which is what an egress/masquerade
    check needs.
  - Nothing is ever added to the root network namespace except the two named namespaces;
    every name the module makes in the root namespace starts with O(name).
  - Everything inside the lab namespace belongs to the lab; links there that the module did
    not ask for are removed.
options:
  name:
    description:
      - Name of the lab, the prefix of everything it creates in the root namespace
        (C(<name>-net), C(<name>-out)) and the directory C(<state_dir>/<name>).
      - Lower-case letters, digits and C(-), at most 16 characters.
    type: str
    default: lab
  state:
    description:
      - V(present) creates what is missing, restarts dead nodes and repairs missing links,
        addresses and routes. Nodes found in the state directory but not in O(nodes) are
        destroyed.
      - V(absent) kills every node and the outside agent, deletes both namespaces and removes
        C(<state_dir>/<name>). It also cleans up after a half-failed create. It refuses a
        directory or namespace that the lab did not make (see above) and then changes nothing.
  subnets:
    description:
      - Underlay subnets (IPv4). Each is one bridge in the lab namespace. With more than one,
        the lab namespace routes between them.
      - Required when O(state=present).
    type: list
    elements: dict
    suboptions:
      name:
        description: Subnet name (letters, digits, C(-), C(_)); used to name its bridge.
        type: str
        required: true
      cidr:
        description: Network of the subnet, for example V(192.168.50.0/24).
        type: str
        required: true
      gateway:
        description: Gateway (router) address in the subnet. Defaults to the first host.
        type: str
  nodes:
    description:
      - Nodes of the lab.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Node name, a DNS label; also the node's hostname.
        type: str
        required: true
      ip:
        description: Underlay IPv4 address of the node (without prefix).
        type: str
        required: true
      subnet:
        description:
          - Name of the subnet of O(subnets) the node is on. Defaults to the subnet whose
            CIDR holds O(nodes[].ip).
        type: str
      state:
        description:
          - V(running) (default) keeps the node running; a dead node is started again with
            an empty C(/run) and its kept C(/etc) and C(/var/lib) (a "reboot").
          - V(stopped) kills the node but keeps its disk (C(/etc), C(/var/lib) upper
            directories); V(running) later boots it again with that disk.
          - V(absent) kills the node and wipes its disk; V(running) later creates it empty
            (a replaced machine).
        type: str
        choices: [running, stopped, absent]
        default: running
  restart:
    description:
      - Names of nodes to restart in this call (kill, then boot again with the kept disk),
        whether or not they are running. Always reports a change for them.
    type: list
    elements: str
    default: []
  outside:
    description:
      - An "outside" network (the internet) behind the lab router, in the namespace
        C(<name>-out). Omit for none; an existing one is then removed.
    type: dict
    suboptions:
      cidr:
        description: Network of the outside link, for example V(203.0.113.0/24).
        type: str
        required: true
      ip:
        description: Address of the outside host in O(outside.cidr), for example V(203.0.113.10).
        type: str
        required: true
      gateway:
        description: Router address on the outside link. Defaults to the first host of O(outside.cidr).
        type: str
  mtu:
    description: MTU of the underlay (bridges, node C(eth0), veths).
    type: int
    default: 1500
  state_dir:
    description:
      - Directory holding C(<name>/<node>/pid) and the nodes' disks. It must not be under
        C(/etc) or C(/var/lib), which the nodes overlay.
    type: path
    default: /run/flatnet/lab
extends_documentation_fragment:
  - flatnet.cluster.state
  - flatnet.cluster.attributes.no_diff
attributes:
  check_mode:
    description: Reports what would be created, repaired or removed, and changes nothing.
  diff_mode:
    description: No diff is returned; RV(actions) lists what was done.
notes:
  - Needs root, C(unshare), C(nsenter) and C(ip) on the controller. IPv4 underlay only.
  - The lab namespace has no default route, so nothing from the lab can reach a real network.
seealso:
  - plugin: flatnet.cluster.nsenter
    plugin_type: connection
"""

EXAMPLES = r"""
- name: Three nodes on one subnet
  flatnet.cluster.lab:
    name: lab
    subnets:
      - {name: lan, cidr: 192.168.50.0/24}
    nodes:
      - {name: node1, ip: 192.168.50.11}
      - {name: node2, ip: 192.168.50.12}
      - {name: node3, ip: 192.168.50.13}

- name: Two subnets behind a router, with an outside network
  flatnet.cluster.lab:
    name: lab2
    subnets:
      - {name: a, cidr: 192.168.50.0/24}
      - {name: b, cidr: 192.168.60.0/24}
    nodes:
      - {name: node1, subnet: a, ip: 192.168.50.11}
      - {name: node2, subnet: b, ip: 192.168.60.11}
    outside: {cidr: 203.0.113.0/24, ip: 203.0.113.10}

- name: Reboot node2 (kept disk, empty /run)
  flatnet.cluster.lab:
    name: lab
    subnets: [{name: lan, cidr: 192.168.50.0/24}]
    nodes:
      - {name: node1, ip: 192.168.50.11}
      - {name: node2, ip: 192.168.50.12}
    restart: [node2]

- name: Replace node2 by an empty machine (wipe it; run again with state running to recreate)
  flatnet.cluster.lab:
    name: lab
    subnets: [{name: lan, cidr: 192.168.50.0/24}]
    nodes:
      - {name: node1, ip: 192.168.50.11}
      - {name: node2, ip: 192.168.50.12, state: absent}

- name: Destroy the lab
  flatnet.cluster.lab:
    name: lab
    state: absent
"""

RETURN = r"""
nodes:
  description: The nodes, by name.
  returned: always
  type: dict
  sample:
    node1:
      pid: 12345
      pidfile: /run/flatnet/lab/lab/node1/pid
      ip: 192.168.50.11
      subnet: lan
      state: running
lab_netns:
  description: Name of the lab (underlay) network namespace.
  returned: always
  type: str
  sample: lab-net
outside_netns:
  description: Name of the outside namespace, or null without O(outside).
  returned: always
  type: str
  sample: lab-out
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["create netns lab-net", "start node node1"]
"""

import copy
import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import IPRoute2
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_ownership import LabOwnership
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_processes import (
    OUTSIDE_DIR,
    LabNodes,
    agent_pid,
    children,
    kill_agent,
    kill_all,
    kill_node,
    lab_unshares,
    node_pid,
    node_unshares,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_spec import ARGUMENT_SPEC, LabError, lab_spec
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_wiring import LabWiring


class Lab(LabOwnership, LabWiring, LabNodes):
    """One lab: its spec (``validate``), ownership, wiring and node processes, and the
    actions taken, in order."""

    def __init__(self, module):
        self.module = module
        self.check = module.check_mode
        p = module.params
        self.name = p["name"]
        self.state_dir = os.path.abspath(p["state_dir"])
        self.lab_dir = os.path.join(self.state_dir, self.name)
        self.netns = f"{self.name}-net"
        self.outns = f"{self.name}-out"
        self.mtu = p["mtu"]
        self.actions = []
        self.marker = None
        self.ipr = IPRoute2(module)
        self.kernel = self.ipr.runner
        self.unshare = self.kernel.bin("unshare")
        # Checked now, so that a missing tool fails before the lab is touched.
        self.kernel.bin("nsenter")
        self.kernel.bin("sysctl")

    def validate(self):
        spec = lab_spec(self.module.params)
        self.subnets, self.nodes, self.outside = spec["subnets"], spec["nodes"], spec["outside"]

    def act(self, text):
        self.actions.append(text)

    def do(self, action, work, *args, **kwargs):
        """Record ``action`` and do ``work(*args, **kwargs)``, unless in check mode (which
        changes nothing). True when done."""
        self.act(action)
        if self.check:
            return False
        work(*args, **kwargs)
        return True

    def node_dir(self, node):
        return os.path.join(self.lab_dir, node)

    def present(self):
        self.check_ownership()
        if not self.check and self.marker is None:
            self.save_marker()  # first of all: whatever follows can be cleaned up by absent
        lab_alive = self.ensure_netns(self.netns)
        lab_up = lab_alive or not self.check  # check mode creates nothing
        if lab_up:
            self.ensure_router()
        # Nodes that are no longer wanted.
        if os.path.isdir(self.lab_dir):
            for entry in sorted(os.listdir(self.lab_dir)):
                if entry == OUTSIDE_DIR or entry in self.nodes:
                    continue
                if os.path.isdir(os.path.join(self.lab_dir, entry)):
                    self.remove_node(entry)
        result = {}
        restart = set(self.module.params["restart"])
        for node in self.nodes.values():
            result[node["name"]] = self.ensure_node(node, node["name"] in restart, lab_up)
        self.ensure_outside(lab_alive)
        return result

    def absent(self):
        # Refused before anything is stopped or deleted when the dir or a namespace is not ours.
        self.check_ownership()
        nodes = []
        if os.path.isdir(self.lab_dir):
            nodes = [e for e in sorted(os.listdir(self.lab_dir))
                     if e != OUTSIDE_DIR and os.path.isdir(os.path.join(self.lab_dir, e))]
        killed = []
        # Also nodes whose directory is gone but whose unshare still runs (half-failed create).
        strays = lab_unshares(self.lab_dir)
        if nodes or strays:
            for node in nodes:
                ndir = self.node_dir(node)
                # Check mode names the nodes a kill would stop.
                if (node_pid(ndir) or node_unshares(ndir)) if self.check else kill_node(ndir, node):
                    killed.append(node)
            strays = lab_unshares(self.lab_dir)
            if strays and not self.check:
                kill_all(strays + [c for u in strays for c in children(u)])
                killed.append(f"{len(strays)} unrecorded node process(es)")
        for node in killed:
            self.act(f"stop node {node}")
        if agent_pid(self.lab_dir) is not None:
            self.act("stop the outside agent")
        if not self.check:
            kill_agent(self.lab_dir)
        for ns in (self.outns, self.netns):
            if os.path.exists(os.path.join("/run/netns", ns)):
                self.do(f"delete netns {ns}", self.ipr.run, ["netns", "del", ns])
        if os.path.isdir(self.lab_dir):
            self.do(f"remove {self.lab_dir}", self.remove_lab_dir)

    def remove_lab_dir(self):
        shutil.rmtree(self.lab_dir)
        try:
            os.rmdir(self.state_dir)
        except OSError:
            pass


def main():
    module = AnsibleModule(
        argument_spec=copy.deepcopy(ARGUMENT_SPEC),
        supports_check_mode=True,
    )
    if os.geteuid() != 0:
        module.fail_json(msg="flatnet.cluster.lab needs root (run it on localhost with become or as root)")
    try:
        lab = Lab(module)
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    nodes = {}
    try:
        lab.validate()
        if module.params["state"] == "present":
            nodes = lab.present()
        else:
            lab.absent()
    except (LabError, KernelError) as e:
        module.fail_json(msg=str(e), actions=lab.actions)
    module.exit_json(
        changed=bool(lab.actions),
        actions=lab.actions,
        nodes=nodes,
        lab_netns=lab.netns,
        outside_netns=lab.outns if module.params["state"] == "present" and lab.outside else None,
    )


if __name__ == "__main__":
    main()
