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

import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.flatnet.cluster.plugins.module_utils import procs
from ansible_collections.flatnet.cluster.plugins.module_utils.probe_agent import agent_source
from ansible_collections.flatnet.cluster.plugins.module_utils.workload import spawn
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import (
    IPError,
    IPRoute2,
    netns_inode,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_identity import (
    RECORD,
    IdentityError,
    boot_id,
    controller_namespaces,
    live_identity,
    mismatches,
    read_record,
    write_private,
    write_record,
)

LAB_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?\Z")
NODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
SUBNET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")
OUTSIDE_DIR = "_outside"  # not a DNS label, so never a node's directory
# The lab's own record in <state_dir>/<name>: which lab made the directory, and which named
# namespaces (dev, inode, boot id) it made. Written before anything else is created.
MARKER = "lab.json"
MADE_BY = "flatnet.cluster.lab"
PENDING = "pending"
OUTSIDE_LINK = "out0"
AGENT_TCP_PORT = 8083
AGENT_UDP_PORT = 8081
ENV = {"LC_ALL": "C", "LANGUAGE": "C"}
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
BOOT_TIMEOUT = 10.0

# Runs as PID 1 of a node. Overlays are mounted while the state dir is still visible; the
# shell then keeps the node dir as its cwd so the ready marker can be written after /run
# and /tmp (where the state dir may live) are covered by the node's own tmpfs.
NODE_INIT = r"""set -eu
node=$1
dir=$2
printf '%s\n' "$node" > /proc/sys/kernel/hostname
for d in etc varlib; do
  mkdir -p "$dir/$d/upper" "$dir/$d/work"
done
mount -t overlay "$node-etc" -o "lowerdir=/etc,upperdir=$dir/etc/upper,workdir=$dir/etc/work" /etc
mount -t overlay "$node-varlib" -o "lowerdir=/var/lib,upperdir=$dir/varlib/upper,workdir=$dir/varlib/work" /var/lib
printf '%s\n' "$node" > /etc/hostname
# Directories that must be the node's own, not the machine's seen through the overlay
# (a machine that is itself a flatnet node would hand its records to every node): each is
# a bind mount of a node-private directory, kept across restarts like the rest of the disk.
for p in /var/lib/flatnet /etc/netns /etc/cni/net.d; do
  mkdir -p "$dir/private$p" "$p"
  mount --bind "$dir/private$p" "$p"
done
umount -l /sys
mount -t sysfs "$node-sys" /sys
ip link set lo up
cd "$dir"
mount -t tmpfs -o mode=0755,nosuid,nodev "$node-run" /run
mount -t tmpfs -o mode=1777,nosuid,nodev "$node-tmp" /tmp
echo ready > ready
cd /
# PID 1 of the node inherits every orphan (workloads, sshd sessions): with SIGCHLD
# ignored the kernel reaps them, so they do not linger as zombies.
exec env --ignore-signal=CHLD sleep infinity
"""


class LabError(Exception):
    pass


def _short(prefix, name):
    """Link name ``prefix + name`` when it fits in 15 characters, else prefix + digest."""
    if len(prefix + name) <= 15:
        return prefix + name
    return prefix + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def bridge_name(subnet):
    return _short("br-", subnet)


def node_link_name(node):
    return _short("v-", node)


# --- processes -------------------------------------------------------------------------
# The /proc readers are the ones workloads use (module_utils/procs.py).
read_cmdline = procs.cmdline


def read_stat(pid):
    """(state, ppid) of a process, or None when it is gone."""
    st = procs.stat(pid)
    return None if st is None else (st["state"], st["ppid"])


def is_running(pid):
    st = read_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def read_int(path):
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def write_text(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def is_node_unshare(pid, node_dir):
    """True when PID is the unshare that started the node living in node_dir."""
    argv = read_cmdline(pid)
    return bool(argv) and os.path.basename(argv[0]) == "unshare" and node_dir in argv and is_running(pid)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def wait_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(is_running(p) for p in pids):
            return True
        time.sleep(0.01)
    return False


def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- the lab ---------------------------------------------------------------------------
class Lab:
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
        self.nsenter = module.get_bin_path("nsenter", required=True)
        self.unshare = module.get_bin_path("unshare", required=True)
        self.sysctl = module.get_bin_path("sysctl", required=True, opt_dirs=["/usr/sbin", "/sbin"])

    # --- helpers -------------------------------------------------------------------
    def act(self, text):
        self.actions.append(text)

    def run(self, argv, data=None):
        rc, out, err = self.module.run_command(
            [str(a) for a in argv], data=data, binary_data=True, environ_update=ENV, check_rc=False
        )
        if rc != 0:
            raise LabError(f"{' '.join(str(a) for a in argv)} failed (rc={rc}): {(err or out).strip()}")
        return out

    def node_prefix(self, pid):
        """What puts a kernel tool into a node's network namespace."""
        return [self.nsenter, f"--net=/proc/{pid}/ns/net"]

    def node_ip(self, pid, argv):
        """Run ``ip ARGV`` in a node's network namespace."""
        return self.ipr.runner.run("ip", argv, prefix=self.node_prefix(pid))[1]

    def node_ip_json(self, pid, argv):
        return self.ipr.runner.json("ip", ["-json"] + list(argv), prefix=self.node_prefix(pid))

    def node_dir(self, node):
        return os.path.join(self.lab_dir, node)

    def node_pid(self, node):
        """PID of a running node, verified against its unshare parent, else None."""
        ndir = self.node_dir(node)
        pid = read_int(os.path.join(ndir, "pid"))
        upid = read_int(os.path.join(ndir, "unshare.pid"))
        if not pid or not upid or not is_node_unshare(upid, ndir):
            return None
        st = read_stat(pid)
        if st is None or st[0] in ("Z", "X") or st[1] != upid:
            return None
        if not os.path.exists(os.path.join(ndir, "ready")):
            return None
        return pid

    def record_identity(self, node, pid):
        live = live_identity(pid)
        if live is None:
            raise LabError(f"node {node}: process {pid} died while it was being recorded")
        controller = controller_namespaces()
        for ns, key in controller.items():
            if live["ns"][ns] == key:
                raise LabError(f"node {node}: process {pid} lives in the controller's own {ns} namespace")
        write_record(self.node_dir(node), live, self.name, node)

    def identity_problems(self, node, pid):
        try:
            record = read_record(os.path.join(self.node_dir(node), RECORD))
        except IdentityError as e:
            return [str(e)]
        return mismatches(record, live_identity(pid), controller_namespaces())

    def lab_unshares(self, node_dir=None):
        """PIDs of live unshare processes that started nodes of this lab (or of one node)."""
        prefix = (node_dir or self.lab_dir) + os.sep
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            argv = read_cmdline(entry)
            if not argv or os.path.basename(argv[0]) != "unshare":
                continue
            if node_dir is not None:
                if node_dir in argv:
                    found.append(int(entry))
            elif any((a + os.sep).startswith(prefix) for a in argv[1:]):
                found.append(int(entry))
        return [p for p in found if is_running(p)]

    def kill_node(self, node):
        """Kill a node's processes (all of them die with its PID 1). True if any was alive."""
        ndir = self.node_dir(node)
        unshares = self.lab_unshares(ndir)
        # The node's PID 1 is the unshare's child; killing it takes everything inside.
        inits = [c for u in unshares for c in children(u)]
        pids = [p for p in inits + unshares if is_running(p)]
        if not pids:
            return False
        for pid in pids:
            kill(pid)
        if not wait_gone(pids):
            raise LabError(f"node {node}: processes {pids} did not die")
        return True

    def clear_boot_files(self, node):
        ndir = self.node_dir(node)
        for f in ("pid", "unshare.pid", "ready", RECORD):
            try:
                os.unlink(os.path.join(ndir, f))
            except FileNotFoundError:
                pass

    def start_node(self, node):
        ndir = self.node_dir(node)
        os.makedirs(ndir, mode=0o700, exist_ok=True)
        self.clear_boot_files(node)
        log_path = os.path.join(ndir, "log")
        argv = [
            self.unshare, "--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
            "--kill-child=SIGKILL", "--propagation", "private", "--",
            "/bin/sh", "-c", NODE_INIT, "flatnet-node", node, ndir,
        ]
        proc = spawn(argv, log_path, env=CLEAN_ENV)
        write_text(os.path.join(ndir, "unshare.pid"), f"{proc.pid}\n")
        deadline = time.monotonic() + BOOT_TIMEOUT
        pid = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if pid is None:
                kids = children(proc.pid)
                pid = kids[0] if kids else None
            if pid is not None and os.path.exists(os.path.join(ndir, "ready")):
                # The identity first: a pidfile is never seen without its record.
                self.record_identity(node, pid)
                write_text(os.path.join(ndir, "pid"), f"{pid}\n")
                return pid
            time.sleep(0.005)
        kill(proc.pid)
        if pid:
            kill(pid)
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-2000:]
        raise LabError(f"node {node} did not boot (rc={proc.poll()}): {tail.strip()}")

    # --- desired state ---------------------------------------------------------------
    def validate(self):
        p = self.module.params
        if not LAB_NAME_RE.match(self.name):
            raise LabError(f"lab name {self.name!r} must be lower-case letters, digits and '-', at most 16 characters")
        for bad in ("/etc", "/var/lib", "/proc", "/sys"):
            if self.state_dir == bad or self.state_dir.startswith(bad + "/"):
                raise LabError(f"state_dir {self.state_dir} must not be under {bad}: the nodes overlay or replace it")
        if p["state"] == "absent":
            return
        if not p["subnets"]:
            raise LabError("subnets is required with state=present")
        if not 576 <= self.mtu <= 65535:
            raise LabError(f"mtu {self.mtu} is out of range (576-65535)")
        self.subnets = {}
        for s in p["subnets"]:
            if not SUBNET_NAME_RE.match(s["name"]):
                raise LabError(f"subnet name {s['name']!r} may hold only letters, digits, '-' and '_'")
            if s["name"] in self.subnets:
                raise LabError(f"subnet {s['name']} is listed twice")
            net = self._net(s["cidr"], f"subnet {s['name']}")
            gw = self._gateway(net, s.get("gateway"), f"subnet {s['name']}")
            for other in self.subnets.values():
                if net.overlaps(other["net"]):
                    raise LabError(f"subnet {s['name']} ({net}) overlaps subnet {other['name']} ({other['net']})")
            self.subnets[s["name"]] = {"name": s["name"], "net": net, "gateway": gw, "bridge": bridge_name(s["name"])}
        bridges = [s["bridge"] for s in self.subnets.values()]
        if len(set(bridges)) != len(bridges):
            raise LabError(f"subnet names give clashing bridge names: {bridges}")
        self.nodes = {}
        used_ips = {str(s["gateway"]): f"the gateway of subnet {s['name']}" for s in self.subnets.values()}
        for n in p["nodes"]:
            name = n["name"]
            if not NODE_NAME_RE.match(name):
                raise LabError(f"node name {name!r} must be a DNS label (lower-case letters, digits, '-')")
            if name in self.nodes:
                raise LabError(f"node {name} is listed twice")
            try:
                ip = ipaddress.IPv4Address(n["ip"])
            except ValueError:
                raise LabError(f"node {name}: ip {n['ip']!r} is not an IPv4 address (give it without prefix)")
            if n.get("subnet"):
                if n["subnet"] not in self.subnets:
                    raise LabError(f"node {name}: subnet {n['subnet']} is not in subnets ({', '.join(self.subnets)})")
                subnet = self.subnets[n["subnet"]]
            else:
                match = [s for s in self.subnets.values() if ip in s["net"]]
                if not match:
                    raise LabError(f"node {name}: ip {ip} is in none of the subnets; set its subnet")
                subnet = match[0]
            if ip not in subnet["net"] or ip in (subnet["net"].network_address, subnet["net"].broadcast_address):
                raise LabError(f"node {name}: ip {ip} is not a host address of subnet {subnet['name']} ({subnet['net']})")
            if str(ip) in used_ips:
                raise LabError(f"node {name}: ip {ip} is already {used_ips[str(ip)]}")
            used_ips[str(ip)] = f"the address of node {name}"
            self.nodes[name] = {
                "name": name, "ip": ip, "subnet": subnet, "state": n.get("state") or "running",
                "link": node_link_name(name),
            }
        links = [n["link"] for n in self.nodes.values()]
        if len(set(links)) != len(links):
            raise LabError(f"node names give clashing link names: {links}")
        for r in p["restart"]:
            if r not in self.nodes:
                raise LabError(f"restart: node {r} is not in nodes")
        self.outside = None
        if p["outside"]:
            o = p["outside"]
            net = self._net(o["cidr"], "outside")
            gw = self._gateway(net, o.get("gateway"), "outside")
            try:
                ip = ipaddress.IPv4Address(o["ip"])
            except ValueError:
                raise LabError(f"outside: ip {o['ip']!r} is not an IPv4 address")
            if ip not in net or ip == gw or ip in (net.network_address, net.broadcast_address):
                raise LabError(f"outside: ip {ip} must be a host address of {net} other than the gateway {gw}")
            for s in self.subnets.values():
                if net.overlaps(s["net"]):
                    raise LabError(f"outside {net} overlaps subnet {s['name']} ({s['net']})")
            self.outside = {"net": net, "gateway": gw, "ip": ip}

    @staticmethod
    def _net(cidr, what):
        try:
            net = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as e:
            raise LabError(f"{what}: {cidr!r} is not an IPv4 network ({e})")
        if net.prefixlen > 30:
            raise LabError(f"{what}: {net} is too small (at most /30)")
        return net

    @staticmethod
    def _gateway(net, gateway, what):
        if not gateway:
            return net.network_address + 1
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise LabError(f"{what}: gateway {gateway!r} is not an IPv4 address")
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise LabError(f"{what}: gateway {gw} is not a host address of {net}")
        return gw

    # --- ownership -------------------------------------------------------------------
    def marker_path(self):
        return os.path.join(self.lab_dir, MARKER)

    def foreign_dir(self, why):
        return LabError(
            f"{self.lab_dir} {why}: lab {self.name} did not make it, so it neither uses nor deletes it. "
            f"Pick another flatnet_lab_name (or flatnet_lab_state_dir), or remove {self.lab_dir} if it is a leftover"
        )

    def read_marker(self):
        """The lab's marker, or None when there is no lab dir or an empty one (a create that
        died before writing it). LabError for a directory the lab did not make."""
        if os.path.islink(self.lab_dir) or (os.path.lexists(self.lab_dir) and not os.path.isdir(self.lab_dir)):
            raise self.foreign_dir("is not a directory")
        if not os.path.isdir(self.lab_dir):
            return None
        path = self.marker_path()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not os.listdir(self.lab_dir):
                return None
            raise self.foreign_dir(f"exists and holds no marker {MARKER}")
        except OSError as e:
            raise self.foreign_dir(f"has an unreadable marker {path} ({e})")
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(1 << 20)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise self.foreign_dir(f"has a marker {path} that is not root-only")
        try:
            marker = json.loads(data)
        except ValueError:
            raise self.foreign_dir(f"has a corrupt marker {path}")
        if not isinstance(marker, dict) or marker.get("made_by") != MADE_BY or marker.get("lab") != self.name:
            other = marker.get("lab") if isinstance(marker, dict) else None
            raise self.foreign_dir(f"has a marker {path} that is not lab {self.name}'s (lab {other!r})")
        if not isinstance(marker.get("netns"), dict):
            marker["netns"] = {}
        return marker

    def save_marker(self):
        if self.marker is None:
            self.marker = {"lab": self.name, "made_by": MADE_BY, "netns": {}}
        os.makedirs(self.lab_dir, mode=0o700, exist_ok=True)
        write_private(self.marker_path(), json.dumps(self.marker, sort_keys=True) + "\n")

    @staticmethod
    def netns_id(name):
        """[dev, inode, boot id] of a live named netns, or None."""
        if netns_inode(name) is None:
            return None
        try:
            st = os.stat(os.path.join("/run/netns", name))
        except OSError:
            return None
        return [st.st_dev, st.st_ino, boot_id()]

    def check_netns(self, ns):
        """True when the named netns exists and this lab made it, False when there is none;
        LabError (before anything is changed) when it exists and the lab did not make it."""
        cur = self.netns_id(ns)
        if cur is None:
            return False
        rec = (self.marker or {}).get("netns", {}).get(ns)
        if rec == cur:
            return True
        # Made by a create that died between "ip netns add" and recording it: ours if it
        # still holds nothing but lo.
        if rec == PENDING and set(self.ipr.links(ns)) <= {"lo"}:
            return True
        why = "its recorded inode differs" if rec else f"{self.marker_path()} does not record it"
        raise LabError(
            f"network namespace {ns} exists but lab {self.name} did not make it ({why}), so it neither uses "
            f"nor deletes it. Pick another flatnet_lab_name, or delete it (ip netns del {ns}) if it is a leftover"
        )

    def forget_netns(self, ns):
        if self.marker is not None and ns in self.marker["netns"]:
            del self.marker["netns"][ns]
            self.save_marker()

    def check_ownership(self):
        self.marker = self.read_marker()
        for ns in (self.netns, self.outns):
            self.check_netns(ns)

    # --- present ---------------------------------------------------------------------
    def present(self):
        self.check_ownership()
        if not self.check and self.marker is None:
            self.save_marker()  # first of all: whatever follows can be cleaned up by absent
        lab_alive = self.ensure_netns(self.netns)
        if lab_alive or not self.check:
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
            result[node["name"]] = self.ensure_node(node, node["name"] in restart, lab_alive)
        self.ensure_outside(lab_alive)
        return result

    def ensure_netns(self, name):
        """Make sure a named netns exists; True when it existed already."""
        if self.check_netns(name):
            if self.marker["netns"].get(name) == PENDING and not self.check:
                self.marker["netns"][name] = self.netns_id(name)
                self.save_marker()
            return True
        self.act(f"create netns {name}")
        if not self.check:
            # Recorded as pending before it exists, so that absent can clean a crash here.
            self.marker["netns"][name] = PENDING
            self.save_marker()
            if os.path.exists(os.path.join("/run/netns", name)):
                self.ipr.run(["netns", "del", name], check=False)  # a dead file, no namespace
            self.ipr.run(["netns", "add", name])
            self.marker["netns"][name] = self.netns_id(name)
            self.save_marker()
            self.ipr.run(["-n", name, "link", "set", "lo", "up"])
        return False

    def netns_sysctl(self, netns, key, value):
        path = f"/run/netns/{netns}"
        out = self.run([self.nsenter, f"--net={path}", self.sysctl, "-n", key]).strip()
        if out != str(value):
            self.act(f"set {key}={value} in {netns}")
            if not self.check:
                self.run([self.nsenter, f"--net={path}", self.sysctl, "-q", "-w", f"{key}={value}"])

    def ensure_router(self):
        exists = netns_inode(self.netns) is not None
        links = self.ipr.links(self.netns) if exists else {}
        addrs = self.ipr.addrs(self.netns) if exists else {}
        if exists:
            self.netns_sysctl(self.netns, "net.ipv4.ip_forward", 1)
        elif not self.check:
            raise LabError(f"netns {self.netns} vanished")
        wanted = {"lo"} | {s["bridge"] for s in self.subnets.values()}
        wanted |= {n["link"] for n in self.nodes.values()}
        if self.outside:
            wanted.add(OUTSIDE_LINK)
        batch = []
        for link in sorted(links):
            if link not in wanted:
                self.act(f"delete link {link} in {self.netns}")
                batch.append(["link", "del", link])
        for s in self.subnets.values():
            br, cidr = s["bridge"], f"{s['gateway']}/{s['net'].prefixlen}"
            cur = links.get(br)
            if cur is None:
                self.act(f"create bridge {br} ({s['net']}) in {self.netns}")
                batch.append(["link", "add", br, "mtu", self.mtu, "type", "bridge"])
            if cur is None or cur.get("mtu") != self.mtu:
                if cur is not None:
                    self.act(f"set mtu {self.mtu} on {br}")
                batch.append(["link", "set", br, "mtu", self.mtu])
            if cur is None or "UP" not in cur.get("flags", []):
                batch.append(["link", "set", br, "up"])
            have = addrs.get(br, [])
            for extra in have:
                if extra != cidr:
                    self.act(f"remove address {extra} from {br}")
                    batch.append(["addr", "del", extra, "dev", br])
            if cidr not in have:
                self.act(f"add gateway {cidr} to {br}")
                batch.append(["addr", "add", cidr, "dev", br])
        if batch and not self.check:
            self.ipr.batch(batch, netns=self.netns)
        if not exists and not self.check:
            self.netns_sysctl(self.netns, "net.ipv4.ip_forward", 1)

    def ensure_node(self, node, restart, lab_alive):
        name, ndir = node["name"], self.node_dir(node["name"])
        info = {"pid": None, "pidfile": os.path.join(ndir, "pid"), "ip": str(node["ip"]),
                "subnet": node["subnet"]["name"], "state": node["state"]}
        if node["state"] != "running":
            self.remove_node(name, wipe=node["state"] == "absent")
            return info
        pid = self.node_pid(name)
        if restart:
            self.act(f"restart node {name}")
            if self.check:
                return info
            self.kill_node(name)
            pid = None
        elif pid is None:
            self.act(f"start node {name}")
            if self.check:
                return info
            self.kill_node(name)  # leftovers of a half-started node
        if pid is None:
            pid = self.start_node(name)
        elif self.identity_problems(name, pid):
            # A running node without a (matching) record, e.g. started by an older lab.
            self.act(f"record the identity of node {name}")
            if not self.check:
                self.record_identity(name, pid)
        info["pid"] = pid
        if lab_alive or not self.check:
            self.ensure_node_link(node, pid)
        return info

    def remove_node(self, name, wipe=True):
        ndir = self.node_dir(name)
        if self.node_pid(name) is not None or self.lab_unshares(ndir):
            self.act(f"stop node {name}")
            if not self.check:
                self.kill_node(name)
        if not self.check:
            self.clear_boot_files(name)
        if wipe and os.path.isdir(ndir):
            self.act(f"wipe node {name}")
            if not self.check:
                shutil.rmtree(ndir)

    def ensure_node_link(self, node, pid):
        link, br = node["link"], node["subnet"]["bridge"]
        cidr = f"{node['ip']}/{node['subnet']['net'].prefixlen}"
        gw = str(node["subnet"]["gateway"])
        lab_links = self.ipr.links(self.netns) if netns_inode(self.netns) is not None else {}
        node_links = {link_["ifname"]: link_ for link_ in self.node_ip_json(pid, ["link", "show"])}
        lab_end, eth0 = lab_links.get(link), node_links.get("eth0")
        # A veth is whole or not at all: if one end is missing, make the pair again.
        paired = (
            lab_end is not None and eth0 is not None
            and lab_end.get("link_index") == eth0.get("ifindex")
            and eth0.get("link_index") == lab_end.get("ifindex")
        )
        if not paired:
            self.act(f"connect node {name_of(node)} to {br} ({link} <-> eth0)")
            if self.check:
                return
            if lab_end is not None:
                self.ipr.run(["-n", self.netns, "link", "del", link])
            if eth0 is not None:
                self.node_ip(pid, ["link", "del", "eth0"])
            self.ipr.run(["-n", self.netns, "link", "add", link, "mtu", self.mtu, "type", "veth",
                          "peer", "name", "eth0", "mtu", self.mtu, "netns", pid])
            lab_end, eth0 = {}, {}
        lab_batch = []
        if lab_end.get("mtu") != self.mtu and lab_end:
            self.act(f"set mtu {self.mtu} on {link}")
            lab_batch.append(["link", "set", link, "mtu", self.mtu])
        if lab_end.get("master") != br:
            if lab_end:
                self.act(f"attach {link} to {br}")
            lab_batch.append(["link", "set", link, "master", br])
        if "UP" not in lab_end.get("flags", []):
            lab_batch.append(["link", "set", link, "up"])
        if lab_batch and not self.check:
            self.ipr.batch(lab_batch, netns=self.netns)
        node_batch = []
        have = []
        if eth0:
            for a in self.node_ip_json(pid, ["addr", "show", "dev", "eth0"]):
                have += [f"{i['local']}/{i['prefixlen']}" for i in a.get("addr_info", [])
                         if i.get("family") == "inet"]
        if eth0 and eth0.get("mtu") != self.mtu:
            self.act(f"set mtu {self.mtu} on eth0 of node {name_of(node)}")
            node_batch.append(["link", "set", "eth0", "mtu", self.mtu])
        if "UP" not in eth0.get("flags", []):
            node_batch.append(["link", "set", "eth0", "up"])
        for extra in have:
            if extra != cidr:
                self.act(f"remove address {extra} from eth0 of node {name_of(node)}")
                node_batch.append(["addr", "del", extra, "dev", "eth0"])
        if cidr not in have:
            self.act(f"add address {cidr} to eth0 of node {name_of(node)}")
            node_batch.append(["addr", "add", cidr, "dev", "eth0"])
        routes = self.node_ip_json(pid, ["-4", "route", "show", "default"]) if eth0 else []
        if not any(r.get("gateway") == gw and r.get("dev") == "eth0" for r in routes) or node_batch:
            if not routes or not any(r.get("gateway") == gw for r in routes):
                self.act(f"set default route via {gw} on node {name_of(node)}")
            node_batch.append(["route", "replace", "default", "via", gw, "dev", "eth0"])
        if node_batch and not self.check:
            self.ipr.runner.batch("ip", node_batch, prefix=self.node_prefix(pid))

    # --- outside ---------------------------------------------------------------------
    def agent_paths(self):
        odir = os.path.join(self.lab_dir, OUTSIDE_DIR)
        return odir, os.path.join(odir, "agent.py"), os.path.join(odir, "pid")

    def agent_pid(self):
        _odir, script, pidfile = self.agent_paths()
        pid = read_int(pidfile)
        if pid and is_running(pid) and script in (read_cmdline(pid) or []):
            return pid
        return None

    def kill_agent(self):
        _odir, script, _pidfile = self.agent_paths()
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                argv = read_cmdline(entry)
                if argv and script in argv[1:3] and is_running(int(entry)):
                    pids.append(int(entry))
        for pid in pids:
            kill(pid)
        wait_gone(pids)
        return bool(pids)

    def ensure_outside(self, lab_alive):
        odir, script, pidfile = self.agent_paths()
        if self.outside is None:
            if self.agent_pid() is not None or netns_inode(self.outns) is not None or os.path.isdir(odir):
                self.act("remove the outside network")
                if not self.check:
                    self.kill_agent()
                    if netns_inode(self.outns) is not None or os.path.exists(f"/run/netns/{self.outns}"):
                        self.ipr.run(["netns", "del", self.outns], check=False)
                    self.forget_netns(self.outns)
                    shutil.rmtree(odir, ignore_errors=True)
            return
        out_alive = self.ensure_netns(self.outns)
        o = self.outside
        gw_cidr = f"{o['gateway']}/{o['net'].prefixlen}"
        ip_cidr = f"{o['ip']}/{o['net'].prefixlen}"
        if out_alive and lab_alive:
            lab_end = self.ipr.links(self.netns).get(OUTSIDE_LINK)
            eth0 = self.ipr.links(self.outns).get("eth0")
            paired = (lab_end is not None and eth0 is not None
                      and lab_end.get("link_index") == eth0.get("ifindex")
                      and eth0.get("link_index") == lab_end.get("ifindex"))
        else:
            lab_end = eth0 = None
            paired = False
        if not paired:
            self.act(f"connect {self.outns} to {self.netns}")
            if not self.check:
                if lab_end is not None:
                    self.ipr.run(["-n", self.netns, "link", "del", OUTSIDE_LINK])
                if eth0 is not None:
                    self.ipr.run(["-n", self.outns, "link", "del", "eth0"])
                self.ipr.run(["-n", self.netns, "link", "add", OUTSIDE_LINK, "type", "veth",
                              "peer", "name", "eth0", "netns", self.outns])
        if not self.check:
            self.ensure_addr(self.netns, OUTSIDE_LINK, gw_cidr, None)
            self.ensure_addr(self.outns, "eth0", ip_cidr, str(o["gateway"]))
        if self.agent_pid() is None:
            self.act(f"start the outside agent on {o['ip']} (TCP {AGENT_TCP_PORT}, UDP {AGENT_UDP_PORT})")
            if not self.check:
                self.kill_agent()
                self.start_agent()

    def ensure_addr(self, netns, dev, cidr, gateway):
        addrs = self.ipr.addrs(netns).get(dev, [])
        link = self.ipr.links(netns).get(dev, {})
        batch = []
        for extra in addrs:
            if extra != cidr:
                self.act(f"remove address {extra} from {dev} in {netns}")
                batch.append(["addr", "del", extra, "dev", dev])
        if cidr not in addrs:
            self.act(f"add address {cidr} to {dev} in {netns}")
            batch.append(["addr", "add", cidr, "dev", dev])
        if "UP" not in link.get("flags", []):
            batch.append(["link", "set", dev, "up"])
        if gateway:
            routes = self.ipr.json(["-4", "route", "show", "default"], netns)
            if not any(r.get("gateway") == gateway for r in routes) or batch:
                if not any(r.get("gateway") == gateway for r in routes):
                    self.act(f"set default route via {gateway} in {netns}")
                batch.append(["route", "replace", "default", "via", gateway, "dev", dev])
        if batch:
            self.ipr.batch(batch, netns=netns)

    def start_agent(self):
        # The outside host runs the collection's probe agent, named "outside": HTTP
        # /clientip answers the caller's address, UDP answers "outside <client-ip>".
        odir, script, pidfile = self.agent_paths()
        os.makedirs(odir, mode=0o700, exist_ok=True)
        write_text(script, agent_source())
        log_path = os.path.join(odir, "log")
        python = sys.executable or "/usr/bin/python3"
        # ip netns exec execs the agent: the PID is the agent's own.
        proc = spawn(
            [self.ipr.ip, "netns", "exec", self.outns, python, script, "--name", "outside",
             "--http-port", str(AGENT_TCP_PORT), "--udp-port", str(AGENT_UDP_PORT)],
            log_path, env=CLEAN_ENV, mode="wb",
        )
        write_text(pidfile, f"{proc.pid}\n")
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                # The agent prints its banner once both sockets are bound.
                if "probe agent outside:" in f.read():
                    return proc.pid
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        kill(proc.pid)
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-2000:].strip()
        raise LabError(f"the outside agent did not start: {tail}")

    # --- absent ----------------------------------------------------------------------
    def absent(self):
        # Refused before anything is stopped or deleted when the dir or a namespace is not ours.
        self.check_ownership()
        nodes = []
        if os.path.isdir(self.lab_dir):
            nodes = [e for e in sorted(os.listdir(self.lab_dir))
                     if e != OUTSIDE_DIR and os.path.isdir(os.path.join(self.lab_dir, e))]
        killed = []
        # Also nodes whose directory is gone but whose unshare still runs (half-failed create).
        strays = self.lab_unshares()
        if nodes or strays:
            for node in nodes:
                if self.check:
                    if self.node_pid(node) or self.lab_unshares(self.node_dir(node)):
                        killed.append(node)
                elif self.kill_node(node):
                    killed.append(node)
            strays = self.lab_unshares()
            if strays and not self.check:
                pids = strays + [c for u in strays for c in children(u)]
                for pid in pids:
                    kill(pid)
                wait_gone(pids)
                killed.append(f"{len(strays)} unrecorded node process(es)")
        for node in killed:
            self.act(f"stop node {node}")
        _odir, script, _pidfile = self.agent_paths()
        if self.agent_pid() is not None:
            self.act("stop the outside agent")
        if not self.check:
            self.kill_agent()
        for ns in (self.outns, self.netns):
            if os.path.exists(os.path.join("/run/netns", ns)):
                self.act(f"delete netns {ns}")
                if not self.check:
                    self.ipr.run(["netns", "del", ns])
        if os.path.isdir(self.lab_dir):
            self.act(f"remove {self.lab_dir}")
            if not self.check:
                shutil.rmtree(self.lab_dir)
                try:
                    os.rmdir(self.state_dir)
                except OSError:
                    pass


def name_of(node):
    return node["name"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default="lab"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            subnets=dict(type="list", elements="dict", options=dict(
                name=dict(type="str", required=True),
                cidr=dict(type="str", required=True),
                gateway=dict(type="str"),
            )),
            nodes=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                ip=dict(type="str", required=True),
                subnet=dict(type="str"),
                state=dict(type="str", default="running", choices=["running", "stopped", "absent"]),
            )),
            restart=dict(type="list", elements="str", default=[]),
            outside=dict(type="dict", options=dict(
                cidr=dict(type="str", required=True),
                ip=dict(type="str", required=True),
                gateway=dict(type="str"),
            )),
            mtu=dict(type="int", default=1500),
            state_dir=dict(type="path", default="/run/flatnet/lab"),
        ),
        supports_check_mode=True,
    )
    if os.geteuid() != 0:
        module.fail_json(msg="flatnet.cluster.lab needs root (run it on localhost with become or as root)")
    lab = Lab(module)
    nodes = {}
    try:
        lab.validate()
        if module.params["state"] == "present":
            nodes = lab.present()
        else:
            lab.absent()
    except (LabError, IPError) as e:
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
