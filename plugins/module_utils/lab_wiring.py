# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The wiring of a M(flatnet.cluster.lab): its named namespaces, the router (one bridge per
subnet with the gateway address, forwarding on), each node's veth to its subnet's bridge
with address and default route, and the outside link with its agent.

Each ``ensure_*`` reads the links and addresses, records what differs as actions, and
applies the difference as one ``ip -batch`` per namespace unless in check mode.
"""

from __future__ import annotations

import os
import shutil

from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import netns_inode
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_ownership import PENDING
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_processes import (
    AGENT_TCP_PORT,
    AGENT_UDP_PORT,
    agent_paths,
    agent_pid,
    kill_agent,
    start_agent,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_spec import LabError

OUTSIDE_LINK = "out0"


def name_of(node):
    return node["name"]


def veth_paired(one, other):
    """Whether two link records (``ip -json link``) are the two ends of one veth."""
    return (one is not None and other is not None
            and one.get("link_index") == other.get("ifindex")
            and other.get("link_index") == one.get("ifindex"))


def addr_changes(have, cidr, dev, where, added="address"):
    """(actions, batch lines) that leave exactly ``cidr`` on ``dev``; ``where`` names the
    device in the actions."""
    actions, lines = [], []
    for extra in have:
        if extra != cidr:
            actions.append(f"remove address {extra} from {where}")
            lines.append(["addr", "del", extra, "dev", dev])
    if cidr not in have:
        actions.append(f"add {added} {cidr} to {where}")
        lines.append(["addr", "add", cidr, "dev", dev])
    return actions, lines


class LabWiring:
    """The links, addresses and routes of the module's Lab (it uses its ``act``, ``check``,
    ``ipr``, ``kernel``, ``netns``, ``outns``, ``mtu``, ``subnets``, ``nodes``, ``outside``,
    ``marker`` and ownership checks)."""

    def acts(self, changes):
        """Record the actions of ``(actions, lines)``; the lines, to be applied."""
        actions, lines = changes
        self.actions.extend(actions)
        return lines

    def apply_lines(self, lines, netns=None, net=None):
        """One ``ip -batch`` of the lines in the named ``netns`` or in the namespace at path
        ``net`` (a node's), unless in check mode: the lines are computed the same either way."""
        if not lines or self.check:
            return
        if net is not None:
            self.kernel.batch("ip", lines, net=net)
        else:
            self.ipr.batch(lines, netns=netns)

    @staticmethod
    def node_net(pid):
        """A node's network namespace, for the runner's ``net``."""
        return f"/proc/{pid}/ns/net"

    def node_ip(self, pid, argv):
        """Run ``ip ARGV`` in a node's network namespace."""
        return self.kernel.run("ip", argv, net=self.node_net(pid))[1]

    def node_ip_json(self, pid, argv):
        return self.kernel.json("ip", ["-json"] + list(argv), net=self.node_net(pid))

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
        if self.kernel.sysctl(key, net=path) != str(value):
            self.act(f"set {key}={value} in {netns}")
            if not self.check:
                self.kernel.sysctl(key, value, net=path)

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
            batch += self.acts(addr_changes(addrs.get(br, []), cidr, br, br, added="gateway"))
        self.apply_lines(batch, netns=self.netns)
        if not exists and not self.check:
            self.netns_sysctl(self.netns, "net.ipv4.ip_forward", 1)

    def ensure_node_link(self, node, pid):
        link, br = node["link"], node["subnet"]["bridge"]
        cidr = f"{node['ip']}/{node['subnet']['net'].prefixlen}"
        gw = str(node["subnet"]["gateway"])
        lab_links = self.ipr.links(self.netns) if netns_inode(self.netns) is not None else {}
        node_links = {link_["ifname"]: link_ for link_ in self.node_ip_json(pid, ["link", "show"])}
        lab_end, eth0 = lab_links.get(link), node_links.get("eth0")
        # A veth is whole or not at all: if one end is missing, make the pair again.
        paired = veth_paired(lab_end, eth0)
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
        self.apply_lines(lab_batch, netns=self.netns)
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
        node_batch += self.acts(addr_changes(have, cidr, "eth0", f"eth0 of node {name_of(node)}"))
        routes = self.node_ip_json(pid, ["-4", "route", "show", "default"]) if eth0 else []
        if not any(r.get("gateway") == gw and r.get("dev") == "eth0" for r in routes) or node_batch:
            if not routes or not any(r.get("gateway") == gw for r in routes):
                self.act(f"set default route via {gw} on node {name_of(node)}")
            node_batch.append(["route", "replace", "default", "via", gw, "dev", "eth0"])
        self.apply_lines(node_batch, net=self.node_net(pid))

    def ensure_outside(self, lab_alive):
        odir, script, pidfile = agent_paths(self.lab_dir)
        if self.outside is None:
            if agent_pid(self.lab_dir) is not None or netns_inode(self.outns) is not None or os.path.isdir(odir):
                self.act("remove the outside network")
                if not self.check:
                    kill_agent(self.lab_dir)
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
            paired = veth_paired(lab_end, eth0)
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
        if agent_pid(self.lab_dir) is None:
            self.act(f"start the outside agent on {o['ip']} (TCP {AGENT_TCP_PORT}, UDP {AGENT_UDP_PORT})")
            if not self.check:
                kill_agent(self.lab_dir)
                start_agent(self.lab_dir, self.ipr.ip, self.outns)

    def ensure_addr(self, netns, dev, cidr, gateway):
        addrs = self.ipr.addrs(netns).get(dev, [])
        link = self.ipr.links(netns).get(dev, {})
        batch = self.acts(addr_changes(addrs, cidr, dev, f"{dev} in {netns}"))
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
