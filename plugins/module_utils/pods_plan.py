# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pods planner: desired pods versus what a node has -> a ``PodsPlan`` (pure).

One planner per concern, called in this order, each adding its kernel lines, processes and
the words for them: removals (recorded pods no longer declared), then for every declared pod
its links (namespace, host veth), what is inside it (lo, eth0, addresses, default route,
static neighbours) and its workload; last the bridge's static neighbours. ``plan_batches``
then orders the kernel work into batches. The module stops processes, applies the batches
(``reconcile.apply``) and starts workloads (see ``plugins/modules/pods.py``).

Private module_utils of flatnet.cluster: the API may change without notice.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import global_addrs, is_up
from ansible_collections.flatnet.cluster.plugins.module_utils.names import (
    bridge_mac,
    derived_mac,
    POD_ALIAS_PREFIX,
    RT_PROTO,
    veth_name,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.reconcile import addr_diff, addr_add_line, paired, Plan

MISSING = "missing"  # observed["netns"] of a name with no namespace file at all


class Problem(str):
    """A reason the plan refuses to act: the message, with its ``kind``: ``"bridge"`` (the
    bridge is missing: an absent run and a check run go on) or ``"foreign"`` (a namespace or
    link that is not ours)."""

    def __new__(cls, message, kind):
        self = super().__new__(cls, message)
        self.kind = kind
        return self


def family_of(addr):
    return ipaddress.ip_interface(addr).version


def pod_mac(name):
    """The pod's eth0 MAC, derived from its name (locally administered, unicast): a pod
    rebuilt after drift keeps it, so its neighbours' ARP/ND caches stay right."""
    return derived_mac("flatnet-pod:" + name)


def pod_alias(name):
    return POD_ALIAS_PREFIX + name


def _host_ip(addr):
    return str(ipaddress.ip_interface(addr).ip)


def _live(ino):
    return ino not in (MISSING, None)


def _default_route_ok(routes, gateway):
    return any(
        r.get("dst") == "default" and r.get("gateway") == gateway and r.get("dev") == "eth0"
        for r in routes or []
    )


def _pids(pids):
    pids = list(pids or [])
    if not pids:
        return "no process left"
    return ("pid " if len(pids) == 1 else "pids ") + " ".join(str(p) for p in pids)


def _others(procs):
    return ", ".join(f"{pid} {comm}" for pid, comm in procs)


def owned(name, observed, record):
    """A live netns is ours when recorded, or when our marked veth is paired with its eth0."""
    if name in record.get("pods", {}):
        return True
    host = observed["links"].get(veth_name(name))
    pod = observed["pods"].get(name) or {}
    eth0 = pod.get("links", {}).get("eth0")
    return bool(host and host.get("ifalias") == pod_alias(name) and paired(host, eth0))


class PodsPlan(Plan):
    """The kernel work in ordered batches (see ``plan_batches``), its words (``actions``,
    ``warnings``), and what the pods need beyond the kernel: ``errors`` (the Problems that
    refuse the run), ``stop`` [(name, workload identity)] before the batches, ``sweep``
    [(name, netns inode)] of pods being removed (every process in them stops), ``start``
    [name] whose workload starts after them, ``adopt`` [name] of pods found without a record."""

    def __init__(self):
        super().__init__()
        self.errors, self.stop, self.sweep, self.start, self.adopt = [], [], [], [], []


class _Run:
    """What every planner reads: the request, the observation and the derived neighbour sets."""

    def __init__(self, desired, observed, record, bridge, mtu, gateways, prune):
        self.desired, self.observed, self.record = desired, observed, record
        self.bridge, self.mtu, self.gateways, self.prune = bridge, mtu, gateways, prune
        self.rec_pods = record.get("pods", {})
        self.links = observed["links"]
        self.identities = observed.get("identities") or {}
        self.trees = observed.get("trees") or {}
        self.others = observed.get("others") or {}
        self.plan = PodsPlan()
        self.act = self.plan.actions.append
        # Kernel lines by where they run (``plan_batches`` orders them): inside a pod before
        # the node batch {name: lines}, our host veths whose pod end is elsewhere (an orphaned
        # netns), the node batch's namespaces and lines, host veths that must vanish with
        # their deleted netns, inside the pods {name: lines}.
        self.pre_pod, self.stale, self.netns_del, self.netns_add, self.node = {}, [], [], [], []
        self.wait_gone, self.pod = [], {}
        self.want_neigh = {}  # pod IP -> (pod MAC, pod name), on the bridge

    def pods_left(self):
        """Recorded pods that are not declared but stay (prune off)."""
        return [] if self.prune else [(n, r) for n, r in sorted(self.rec_pods.items())
                                      if n not in self.desired]


def plan_neighbour_sets(run):
    """The bridge MAC for the pods' gateway entries, the pod-pod entries, the fresh pods."""
    bridge, links, plan = run.bridge, run.links, run.plan
    if bridge not in links:
        plan.errors.append(Problem(
            f"bridge {bridge} does not exist on this node: run flatnet.cluster.node first", "bridge"))
    # Static neighbour entries both ways (pod -> gateway, bridge -> pod): no pod ARPs for its
    # gateway and the node never ARPs for its pods. Permanent entries do not count against
    # the kernel's neighbour table limit (gc_thresh3), which a node with hundreds of pods, or
    # a lab whose namespaces all share one kernel, otherwise overflows.
    # The gateway's entry needs the fixed MAC that flatnet.cluster.node gives the bridge: a
    # bridge left to itself takes its lowest port's MAC, which moves as pods come and go.
    run.br_mac = bridge_mac(bridge, run.gateways.values())
    if run.br_mac is not None and bridge in links and links[bridge].get("address") != run.br_mac:
        plan.warnings.append(
            f"bridge {bridge} has MAC {links[bridge].get('address')}, not the fixed {run.br_mac} that "
            f"flatnet.cluster.node gives it, so the pods resolve their gateway by ARP/ND; "
            f"run flatnet.cluster.node for {bridge} to fix it")
        run.br_mac = None
    # Same-node pod <-> pod: every pod gets a static entry for each other pod of the node too.
    # In a lab, whose nodes are namespaces of one kernel, the pods' dynamic entries otherwise
    # fill the one shared table (two per same-node pair that talks) and verify fails at 8 x 100.
    run.peers = {}  # pod IP -> (pod MAC, pod name, family)
    for name in sorted(run.desired):
        for addr in run.desired[name]["ips"]:
            run.peers[_host_ip(addr)] = (pod_mac(name), name, family_of(addr))
    for name, rec in run.pods_left():
        for addr in rec.get("ips") or []:
            run.peers.setdefault(_host_ip(addr), (pod_mac(name), name, family_of(addr)))
    # Pods added in this run: their neighbour entries need no action line of their own.
    run.fresh = {name for name in run.desired
                 if name not in run.rec_pods and not _live(run.observed["netns"].get(name, MISSING))}
    run.gone_ips = {_host_ip(addr) for name, rec in run.rec_pods.items()
                    if name not in run.desired and run.prune for addr in rec.get("ips") or []}


def plan_removals(run):
    """Pods that go: recorded but no longer declared."""
    plan, act, netns = run.plan, run.act, run.observed["netns"]
    for name in sorted(run.rec_pods):
        if name in run.desired or not run.prune:
            continue
        act(f"remove pod {name}")
        if run.observed["workloads"].get(name):
            plan.stop.append((name, run.identities.get(name)))
            act(f"{name}: stop workload ({_pids(run.trees.get(name))})")
        host = run.links.get(veth_name(name))
        host_ours = host is not None and host.get("ifalias") == pod_alias(name)
        if name in netns:
            # The namespace is the pod: whatever else runs in it (a shell someone opened
            # there, a probe agent, a copy an interrupted run left) goes with it, or it would keep the
            # namespace and its veth alive after the name is gone.
            if netns[name] is not None:
                plan.sweep.append((name, netns[name]))
                if run.others.get(name):
                    act(f"{name}: stop {len(run.others[name])} other process(es) in the pod "
                        f"({_others(run.others[name])})")
            run.netns_del.append(name)
            if host_ours:
                run.wait_gone.append(veth_name(name))
        elif host_ours:
            run.node.append(["link", "del", veth_name(name)])


def plan_links(run, name):
    """The pod's namespace and host veth. Returns ``(create_veth, eth0, pod_links)`` for the
    inside planner, or None when the pod is refused (a Problem is recorded)."""
    plan, act, mtu = run.plan, run.act, run.mtu
    veth = veth_name(name)
    host = run.links.get(veth)
    ino = run.observed["netns"].get(name, MISSING)
    pod_links = (run.observed["pods"].get(name) or {}).get("links", {})
    eth0 = pod_links.get("eth0")
    rec = run.rec_pods.get(name)
    if _live(ino) and not owned(name, run.observed, run.record):
        plan.errors.append(Problem(
            f"network namespace {name} exists and was not made by flatnet.cluster; "
            f"delete it or rename the pod", "foreign"))
        return None
    if host is not None and host.get("ifalias") != pod_alias(name):
        plan.errors.append(Problem(
            f"link {veth} (host end for pod {name}) exists without the marker "
            f"'{pod_alias(name)}'; it is not ours: delete it or rename the pod", "foreign"))
        return None
    for addr in run.desired[name]["ips"]:
        run.want_neigh[_host_ip(addr)] = (pod_mac(name), name)
    if rec is None and _live(ino):
        plan.adopt.append(name)
        act(f"adopt pod {name} (marked veth found, no record)")

    create_veth = False
    if not _live(ino):
        if ino is None:
            act(f"{name}: remove dead netns file")
            run.netns_del.append(name)
        act(f"add pod {name}" if rec is None else f"{name}: recreate missing netns")
        run.netns_add.append(name)
        pod_links, eth0 = {}, None
        create_veth = True
    elif not paired(host, eth0):
        create_veth = True
        if eth0 is not None:
            run.pre_pod[name] = [["link", "del", "eth0"]]
            act(f"{name}: delete eth0 (not paired with {veth})")
        act(f"{name}: add veth {veth}")
    if create_veth:
        if host is not None:
            run.stale.append(veth)
            act(f"{name}: delete stale {veth}")
        run.node += [
            ["link", "add", veth, "mtu", mtu, "type", "veth", "peer", "name", "eth0",
             "address", pod_mac(name), "mtu", mtu, "netns", name],
            ["link", "set", veth, "alias", pod_alias(name)],
            ["link", "set", veth, "master", run.bridge, "up"],
        ]
        eth0 = {"mtu": mtu, "address": pod_mac(name)}
    else:
        fix = []
        if host.get("mtu") != mtu:
            fix += ["mtu", mtu]
            act(f"{name}: set {veth} mtu {mtu} (was {host.get('mtu')})")
        if host.get("master") != run.bridge:
            fix += ["master", run.bridge]
            act(f"{name}: attach {veth} to {run.bridge}")
        if not is_up(host):
            fix += ["up"]
            act(f"{name}: set {veth} up")
        if fix:
            run.node.append(["link", "set", veth] + fix)
    return create_veth, eth0, pod_links


def plan_inside(run, name, create_veth, eth0, pod_links):
    """Lines run inside the pod: lo, eth0 (MAC, MTU, addresses, up), default routes, then
    the pod's static neighbours."""
    act, mtu, want = run.act, run.mtu, run.desired[name]
    pod = run.observed["pods"].get(name) or {}
    lines = []
    lo = pod_links.get("lo")
    if lo is None or not is_up(lo):
        lines.append(["link", "set", "lo", "up"])
        if pod_links:
            act(f"{name}: set lo up")
    # A new eth0, or a new MAC on it, starts with no neighbour entries.
    pod_neigh = {} if create_veth else {
        n.get("dst"): n for n in pod.get("neigh") or [] if n.get("dev") == "eth0"}
    if eth0.get("address") != pod_mac(name):
        lines.append(["link", "set", "eth0", "address", pod_mac(name)])
        act(f"{name}: set eth0 address {pod_mac(name)}")
        pod_neigh = {}
    if eth0.get("mtu") != mtu:
        lines.append(["link", "set", "eth0", "mtu", mtu])
        act(f"{name}: set eth0 mtu {mtu} (was {eth0.get('mtu')})")
    gone, new = addr_diff(global_addrs(eth0), want["ips"])
    for addr in gone:
        lines.append(["addr", "del", addr, "dev", "eth0"])
        act(f"{name}: remove address {addr}")
    for addr in new:
        lines.append(addr_add_line(addr, "eth0"))
        act(f"{name}: add address {addr}")
    eth0_changed = create_veth or bool(gone or new)
    if not is_up(eth0):
        lines.append(["link", "set", "eth0", "up"])
        if not create_veth:
            act(f"{name}: set eth0 up")
        eth0_changed = True
    fams = {family_of(a) for a in want["ips"]}
    for fam in sorted(fams):
        gw = run.gateways.get(fam)
        if gw is None:
            continue
        # Changing eth0's addresses or link state drops routes via it: always re-add then.
        if eth0_changed or not _default_route_ok(pod.get("routes", {}).get(fam), gw):
            lines.append(["route", "replace", "default", "via", gw, "dev", "eth0",
                          "proto", RT_PROTO])
            if not create_veth:
                act(f"{name}: set default route via {gw}")
    lines += plan_pod_neighbours(run, name, fams, create_veth, pod_neigh)
    if lines:
        run.pod[name] = lines


def plan_pod_neighbours(run, name, fams, create_veth, pod_neigh):
    """The pod's static entries for its gateways (the bridge's fixed MAC) and its node's
    other pods of its families; stale entries of ours go."""
    act, lines = run.act, []
    want_pod_neigh = {} if run.br_mac is None else {
        run.gateways[fam]: (run.br_mac, None) for fam in fams if fam in run.gateways}
    for dst, (mac, other, fam) in run.peers.items():
        if other != name and fam in fams:
            want_pod_neigh[dst] = (mac, other)
    for dst, (mac, other) in sorted(want_pod_neigh.items()):
        if (pod_neigh.get(dst) or {}).get("lladdr") != mac:
            lines.append(["neigh", "replace", dst, "lladdr", mac, "dev", "eth0",
                          "nud", "permanent", "proto", RT_PROTO])
            # A new pod, or an entry for a new pod, is said by "add pod ...".
            if not create_veth and other not in run.fresh:
                act(f"{name}: set static neighbour {dst} lladdr {mac}"
                    + (f" (pod {other})" if other else ""))
    for dst, entry in sorted(pod_neigh.items()):
        if dst not in want_pod_neigh and entry.get("protocol") == str(RT_PROTO):
            lines.append(["neigh", "del", dst, "dev", "eth0"])
            # The entries for a pod removed in this run are said by "remove pod ...".
            if dst not in run.gone_ips:
                act(f"{name}: remove static neighbour {dst}")
    return lines


def plan_workload(run, name):
    """The recorded process tree, whatever it exec'd or forked since: stopped when its
    command changed or its namespace was replaced, started when wanted and not running."""
    plan, act = run.plan, run.act
    ino = run.observed["netns"].get(name, MISSING)
    argv = run.desired[name]["argv"]
    rec_argv = (run.rec_pods.get(name) or {}).get("command")
    running = run.observed["workloads"].get(name, False)
    ident = run.identities.get(name) or {}
    same_ns = _live(ino) and ino == ident.get("netns_inode")
    ok = running and same_ns and argv == rec_argv
    if running and not ok:
        plan.stop.append((name, run.identities.get(name)))
        why = "command changed" if argv != rec_argv else "netns replaced"
        if argv is None:
            why = "command removed"
        act(f"{name}: stop workload ({_pids(run.trees.get(name))}; {why})")
    if argv and not ok:
        plan.start.append(name)
        if rec_argv and not running and argv == rec_argv:
            act(f"{name}: restart workload {' '.join(argv)} (was dead)")
            if run.others.get(name):
                plan.warnings.append(
                    f"pod {name}: its workload is gone, but other processes run in its network "
                    f"namespace ({_others(run.others[name])}). A "
                    f"command that starts a new session and clears its environment (a daemon) "
                    f"cannot be tracked and is started again on every run: run it in the "
                    f"foreground")
        else:
            act(f"{name}: start workload {' '.join(argv)}")


def plan_bridge_neighbours(run):
    """The node's static entries on the bridge, one per pod address (kept pods too)."""
    bridge = run.bridge
    if not run.prune:
        for name, rec in run.rec_pods.items():
            for addr in rec.get("ips") or [] if name not in run.desired else []:
                run.want_neigh.setdefault(_host_ip(addr), (pod_mac(name), name))
    have = run.observed.get("bridge_neigh") or {}
    for addr, (mac, name) in sorted(run.want_neigh.items()):
        if (have.get(addr) or {}).get("lladdr") != mac:
            run.node.append(["neigh", "replace", addr, "lladdr", mac, "dev", bridge,
                             "nud", "permanent", "proto", RT_PROTO])
            if name not in run.fresh:
                run.act(f"{name}: set static neighbour {addr} lladdr {mac} on {bridge}")
    for addr, entry in sorted(have.items()):
        if addr not in run.want_neigh and entry.get("protocol") == str(RT_PROTO):
            run.node.append(["neigh", "del", addr, "dev", bridge])
            run.act(f"remove static neighbour {addr} from {bridge}")


def plan(desired, observed, record, bridge, mtu, gateways, prune=True):
    """Compute what to do.

    ``observed``: ``netns`` {name: inode or None for a dead file}, ``links`` (node links by
    name, ``ip -details``), ``pods`` {name: {"links": {ifname: link with addr_info},
    "routes": {4: [...], 6: [...]}}} for the live namespaces that were read, ``workloads``
    {name: True when a process of the recorded workload tree still runs}, ``identities``
    {name: the recorded tree identity (see module_utils/workload.py) or None}, ``trees``
    {name: PIDs of that tree}, ``others`` {name: [(pid, comm)] of the other processes in
    the pod's live namespace}.
    Returns a ``PodsPlan``; ``actions`` says it for humans, ``errors`` holds the Problems
    that refuse the run.
    """
    run = _Run(desired, observed, record, bridge, mtu, gateways, prune)
    plan_neighbour_sets(run)
    plan_removals(run)
    for name in sorted(desired):
        links = plan_links(run, name)
        if links is None:
            continue
        plan_inside(run, name, *links)
        plan_workload(run, name)
    plan_bridge_neighbours(run)
    plan_batches(run)
    return run.plan


def plan_batches(run):
    """The kernel work in the order it runs: inside the pods whose eth0 goes (one batch
    each), the stale host veths, the node batch, then inside the pods side by side."""
    plan = run.plan
    for name, lines in run.pre_pod.items():
        plan.batch(netns=name).extend(lines)
    if run.stale:
        # A stale veth may vanish by itself meanwhile (its namespace died with the workload
        # just stopped), so a failed delete is fine as long as the link ends up gone.
        plan.batch(force=True, check=False, wait_gone=list(run.stale)).extend(
            ["link", "del", veth] for veth in run.stale)
    # One node-level batch: namespaces (from the node's own mount namespace, so the
    # /run/netns bind mounts are visible to everyone), then the veths; `ip netns del`
    # returns before the kernel drops the deleted namespaces' veths.
    node = ([["netns", "del", n] for n in run.netns_del]
            + [["netns", "add", n] for n in run.netns_add] + run.node)
    if node:
        plan.batch(wait_gone=run.wait_gone).extend(node)
    for name, lines in run.pod.items():
        plan.batch(netns=name, parallel=True).extend(lines)


def needs_change(plan):
    return bool(plan.actions)
