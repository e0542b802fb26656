# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The wiring of a M(flatnet.cluster.lab): its named namespaces, the router (one bridge per
subnet with the gateway address, forwarding on), each node's veth to its subnet's bridge
with address and default route, and the outside link with its agent.

The ``*_plan`` functions are pure: from the links, addresses and routes read, they return a
``reconcile.Plan`` (the batches per namespace and the actions in words). ``LabWiring`` reads,
plans, and applies each plan unless in check mode, stage by stage where a stage builds on
the one before (a node's side is wired once its veth exists).
"""

from __future__ import annotations

import os
import shutil

from ansible_collections.flatnet.cluster.plugins.module_utils import reconcile
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


def node_net(pid):
    """A node's network namespace, for a batch's or the runner's ``net``."""
    return f"/proc/{pid}/ns/net"


def addr_lines(plan, have, cidr, dev, where, added="address"):
    """The lines that leave exactly ``cidr`` on ``dev``, their actions added to ``plan``
    (``where`` names the device in them)."""
    gone, new = reconcile.addr_diff(have, [cidr])
    plan.actions += [f"remove address {a} from {where}" for a in gone]
    plan.actions += [f"add {added} {a} to {where}" for a in new]
    return reconcile.addr_lines(have, [cidr], dev)


def router_plan(netns, mtu, subnets, wanted, links, addrs):
    """The lab namespace: links not ``wanted`` deleted, one bridge per subnet with its
    gateway address. ``links``/``addrs``: as read in ``netns`` (empty when it is missing)."""
    plan = reconcile.Plan()
    batch = plan.batch(netns=netns)
    for link in sorted(links):
        if link not in wanted:
            plan.actions.append(f"delete link {link} in {netns}")
            batch.append(["link", "del", link])
    for s in subnets:
        br, cidr = s["bridge"], f"{s['gateway']}/{s['net'].prefixlen}"
        cur = links.get(br)
        if cur is None:
            plan.actions.append(f"create bridge {br} ({s['net']}) in {netns}")
            batch.append(["link", "add", br, "mtu", mtu, "type", "bridge"])
        if cur is None or cur.get("mtu") != mtu:
            if cur is not None:
                plan.actions.append(f"set mtu {mtu} on {br}")
            batch.append(["link", "set", br, "mtu", mtu])
        if cur is None or "UP" not in cur.get("flags", []):
            batch.append(["link", "set", br, "up"])
        batch += addr_lines(plan, addrs.get(br, []), cidr, br, br, added="gateway")
    return plan


def veth_plan(action, netns, link, lab_end, peer_end, peer_at, add_line):
    """A veth is whole or not at all: unless ``lab_end`` (``link`` in ``netns``) and
    ``peer_end`` (``eth0`` at ``peer_at``, a batch's ``netns=``/``net=``) are one pair, the
    ends that exist are deleted and the pair is made again with ``add_line``."""
    plan = reconcile.Plan()
    if reconcile.paired(lab_end, peer_end):
        return plan
    plan.actions.append(action)
    if lab_end is not None:
        plan.batch(netns=netns).append(["link", "del", link])
    if peer_end is not None:
        plan.batch(**peer_at).append(["link", "del", "eth0"])
    plan.batch(netns=netns).append(add_line)
    return plan


def node_port_plan(node, netns, mtu, pid, lab_end, eth0, have, routes):
    """A node's veth once it exists: the lab end a port of the subnet's bridge, the node's
    ``eth0`` up with the node's address and the default route via the gateway. ``lab_end``,
    ``eth0``: the links read (``{}`` for a veth just made); ``have``: eth0's IPv4
    addresses; ``routes``: the node's default IPv4 routes."""
    name, link, br = node["name"], node["link"], node["subnet"]["bridge"]
    cidr = f"{node['ip']}/{node['subnet']['net'].prefixlen}"
    gw = str(node["subnet"]["gateway"])
    plan = reconcile.Plan()
    lab_batch = plan.batch(netns=netns)
    if lab_end.get("mtu") != mtu and lab_end:
        plan.actions.append(f"set mtu {mtu} on {link}")
        lab_batch.append(["link", "set", link, "mtu", mtu])
    if lab_end.get("master") != br:
        if lab_end:
            plan.actions.append(f"attach {link} to {br}")
        lab_batch.append(["link", "set", link, "master", br])
    if "UP" not in lab_end.get("flags", []):
        lab_batch.append(["link", "set", link, "up"])
    node_batch = plan.batch(net=node_net(pid))
    if eth0 and eth0.get("mtu") != mtu:
        plan.actions.append(f"set mtu {mtu} on eth0 of node {name}")
        node_batch.append(["link", "set", "eth0", "mtu", mtu])
    if "UP" not in eth0.get("flags", []):
        node_batch.append(["link", "set", "eth0", "up"])
    node_batch += addr_lines(plan, have, cidr, "eth0", f"eth0 of node {name}")
    if not any(r.get("gateway") == gw and r.get("dev") == "eth0" for r in routes) or node_batch:
        if not routes or not any(r.get("gateway") == gw for r in routes):
            plan.actions.append(f"set default route via {gw} on node {name}")
        node_batch.append(["route", "replace", "default", "via", gw, "dev", "eth0"])
    return plan


def link_addr_plan(netns, dev, cidr, gateway, have, link, routes):
    """``dev`` in ``netns`` up with exactly ``cidr``, and with a ``gateway`` a default route
    via it. ``have``: its addresses; ``link``: the link read; ``routes``: default IPv4 routes."""
    plan = reconcile.Plan()
    batch = plan.batch(netns=netns)
    batch += addr_lines(plan, have, cidr, dev, f"{dev} in {netns}")
    if "UP" not in link.get("flags", []):
        batch.append(["link", "set", dev, "up"])
    if gateway:
        if not any(r.get("gateway") == gateway for r in routes) or batch:
            if not any(r.get("gateway") == gateway for r in routes):
                plan.actions.append(f"set default route via {gateway} in {netns}")
            batch.append(["route", "replace", "default", "via", gateway, "dev", dev])
    return plan


class LabWiring:
    """The links, addresses and routes of the module's Lab (it uses its ``act``, ``do``,
    ``check``, ``ipr``, ``kernel``, ``netns``, ``outns``, ``mtu``, ``subnets``, ``nodes``,
    ``outside``, ``marker`` and ownership checks)."""

    def carry_out(self, plan):
        """Record the plan's actions and apply it, unless in check mode (which must not touch
        the kernel). True when the kernel is now as planned, so a later stage can build on it."""
        self.actions.extend(plan.actions)
        if self.check:
            return not any(step.lines for step in plan.batches)
        reconcile.apply(self.kernel, plan)
        return True

    def node_ip_json(self, pid, argv):
        return self.kernel.json("ip", ["-json"] + list(argv), net=node_net(pid))

    def ensure_netns(self, name):
        """Make sure a named netns exists; True when it existed already."""
        if not self.check_netns(name):
            self.do(f"create netns {name}", self.create_netns, name)
            return False
        if self.marker["netns"].get(name) == PENDING and not self.check:
            self.marker["netns"][name] = self.netns_id(name)
            self.save_marker()
        return True

    def create_netns(self, name):
        # Recorded as pending before it exists, so that absent can clean a crash here.
        self.marker["netns"][name] = PENDING
        self.save_marker()
        if os.path.exists(os.path.join("/run/netns", name)):
            self.ipr.run(["netns", "del", name], check=False)  # a dead file, no namespace
        self.ipr.run(["netns", "add", name])
        self.marker["netns"][name] = self.netns_id(name)
        self.save_marker()
        self.ipr.run(["-n", name, "link", "set", "lo", "up"])

    def netns_sysctl(self, netns, key, value):
        path = f"/run/netns/{netns}"
        if self.kernel.sysctl(key, net=path) != str(value):
            self.do(f"set {key}={value} in {netns}", self.kernel.sysctl, key, value, net=path)

    def ensure_router(self):
        exists = netns_inode(self.netns) is not None
        if not exists and not self.check:
            raise LabError(f"netns {self.netns} vanished")
        links = self.ipr.links(self.netns) if exists else {}
        addrs = self.ipr.addrs(self.netns) if exists else {}
        if exists:
            self.netns_sysctl(self.netns, "net.ipv4.ip_forward", 1)
        wanted = {"lo"} | {s["bridge"] for s in self.subnets.values()}
        wanted |= {n["link"] for n in self.nodes.values()}
        if self.outside:
            wanted.add(OUTSIDE_LINK)
        self.carry_out(router_plan(self.netns, self.mtu, self.subnets.values(), wanted, links, addrs))

    def ensure_node_link(self, node, pid):
        link = node["link"]
        lab_links = self.ipr.links(self.netns) if netns_inode(self.netns) is not None else {}
        node_links = {link_["ifname"]: link_ for link_ in self.node_ip_json(pid, ["link", "show"])}
        lab_end, eth0 = lab_links.get(link), node_links.get("eth0")
        pair = veth_plan(
            f"connect node {node['name']} to {node['subnet']['bridge']} ({link} <-> eth0)",
            self.netns, link, lab_end, eth0, {"net": node_net(pid)},
            ["link", "add", link, "mtu", self.mtu, "type", "veth", "peer", "name", "eth0", "mtu", self.mtu,
             "netns", pid],
        )
        if not self.carry_out(pair):
            return  # check mode: the node's side waits for its veth
        have, routes = [], []
        if pair.changed:
            lab_end, eth0 = {}, {}  # just made: nothing on it yet
        else:
            for a in self.node_ip_json(pid, ["addr", "show", "dev", "eth0"]):
                have += [f"{i['local']}/{i['prefixlen']}" for i in a.get("addr_info", [])
                         if i.get("family") == "inet"]
            routes = self.node_ip_json(pid, ["-4", "route", "show", "default"])
        self.carry_out(node_port_plan(node, self.netns, self.mtu, pid, lab_end, eth0, have, routes))

    def remove_outside(self, odir):
        kill_agent(self.lab_dir)
        if netns_inode(self.outns) is not None or os.path.exists(f"/run/netns/{self.outns}"):
            self.ipr.run(["netns", "del", self.outns], check=False)
        self.forget_netns(self.outns)
        shutil.rmtree(odir, ignore_errors=True)

    def restart_agent(self):
        kill_agent(self.lab_dir)
        start_agent(self.lab_dir, self.ipr.ip, self.outns)

    def ensure_outside(self, lab_alive):
        odir, _script, _pidfile = agent_paths(self.lab_dir)
        if self.outside is None:
            if agent_pid(self.lab_dir) is not None or netns_inode(self.outns) is not None or os.path.isdir(odir):
                self.do("remove the outside network", self.remove_outside, odir)
            return
        out_alive = self.ensure_netns(self.outns)
        o = self.outside
        lab_end = eth0 = None
        if out_alive and lab_alive:
            lab_end = self.ipr.links(self.netns).get(OUTSIDE_LINK)
            eth0 = self.ipr.links(self.outns).get("eth0")
        self.carry_out(veth_plan(
            f"connect {self.outns} to {self.netns}", self.netns, OUTSIDE_LINK, lab_end, eth0,
            {"netns": self.outns},
            ["link", "add", OUTSIDE_LINK, "type", "veth", "peer", "name", "eth0", "netns", self.outns],
        ))
        if not self.check:  # check mode does not plan the addresses of the outside link (nor did it)
            self.ensure_addr(self.netns, OUTSIDE_LINK, f"{o['gateway']}/{o['net'].prefixlen}", None)
            self.ensure_addr(self.outns, "eth0", f"{o['ip']}/{o['net'].prefixlen}", str(o["gateway"]))
        if agent_pid(self.lab_dir) is None:
            self.do(f"start the outside agent on {o['ip']} (TCP {AGENT_TCP_PORT}, UDP {AGENT_UDP_PORT})",
                    self.restart_agent)

    def ensure_addr(self, netns, dev, cidr, gateway):
        have = self.ipr.addrs(netns).get(dev, [])
        link = self.ipr.links(netns).get(dev, {})
        routes = self.ipr.json(["-4", "route", "show", "default"], netns) if gateway else []
        self.carry_out(link_addr_plan(netns, dev, cidr, gateway, have, link, routes))
