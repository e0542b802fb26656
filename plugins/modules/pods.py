#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pods
short_description: Reconcile the pods of one node (network namespaces on the node bridge)
version_added: 0.1.0
description:
  - Makes the pods of one node match a declared list, in one call and with a handful of
    C(ip -batch) processes, whatever the number of pods.
  - A pod is a named network namespace named after the pod, holding C(lo) and C(eth0) (the pod
    end of a veth pair) with the pod addresses and a default route via the node gateway. The host
    end of the veth is called C(veth) + 8 hex characters of the pod name's SHA-256, carries the
    ifalias C(flatnet pod <name>) and is a port of the node bridge.
  - Each pod gets a static (permanent) neighbour entry for its gateway, pointing at the bridge's
    MAC, and the bridge one for each pod address, pointing at the pod's C(eth0) MAC (derived from
    the pod name), marked with protocol 157. Each pod also gets one for every other pod of the
    node (same family), pointing at that pod's derived MAC, so that same-node pod to pod traffic
    needs no ARP/ND either. Nobody ARPs on the pod network, and since permanent entries do not
    count against the kernel's neighbour table limit (C(gc_thresh3)), hundreds of pods per node
    do not overflow it (nor do the pods of a lab, whose nodes all share one kernel's table). With
    N pods a node holds N * (N - 1) pod to pod entries (9,900 for 100 pods); adding or removing a
    pod updates the entries of every other pod of the node. The gateway's entry needs the fixed bridge MAC that
    M(flatnet.cluster.node) sets; on a bridge with another MAC the pods resolve their gateway by
    ARP/ND, with a warning.
  - Drift is repaired, namely a missing or dead namespace, a missing veth, a wrong or extra address, a
    wrong MTU, a veth outside the bridge or down, a missing default route or static neighbour
    entry, a dead workload.
  - Only namespaces recorded in C(/var/lib/flatnet/pods.json), or whose veth carries the
    C(flatnet pod <name>) marker, are ever changed or deleted. A declared pod whose name is
    taken by a foreign namespace or link is an error.
author: flatnet maintainers (@flatnet)
options:
  bridge:
    description: The node bridge that the host ends of the veths join (made by M(flatnet.cluster.node)).
    type: str
    default: cni0
  mtu:
    description: MTU of both ends of every pod veth.
    type: int
    default: 1500
  gateways:
    description:
      - Gateway IPs (without prefix), at most one per family; each pod gets a default route via
        the gateway of each family it has an address of.
    type: list
    elements: str
    default: []
  pods:
    description: The pods of this node.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Pod name, a DNS label (1 to 63 lower-case letters, digits and C(-), starting and ending with a letter or digit); also the netns name.
        type: str
        required: true
      ips:
        description: Addresses of C(eth0) with prefix, for example V(10.244.0.2/24).
        type: list
        elements: str
        default: []
      command:
        description:
          - Workload started inside the pod, detached, as a list of arguments or a string split
            like shell words (never run by a shell).
          - It runs in a session of its own and its environment carries C(FLATNET_WORKLOAD_ID), a
            random token. Its identity (session id, start time of its first process, boot id, the
            pod's network namespace, the token) is recorded as soon as it starts, so whatever it
            execs or forks stays one workload. It is started again when none of its processes is
            left (reported as C(restart workload ... (was dead))), replaced when the command
            changes, and stopped when the pod is removed or the command is unset; stopping sends
            TERM to every process of the tree, then KILL to what is left after 3 seconds.
          - A command that both starts a new session and clears its environment (a classic
            daemon) leaves the tree and cannot be tracked; run it in the foreground.
          - Its output goes to C(<state_dir>/logs/<name>.log).
        type: raw
      labels:
        description: The pod's labels from the plan; services select pods by them. Not used here.
        type: dict
        version_added: 0.2.0
  prune:
    description:
      - Remove recorded pods that are not in O(pods).
      - Removing a pod (here or with O(state=absent)) stops its workload tree and then every other
        process still running in the pod's network namespace (a shell opened there, a probe agent),
        since they would keep the namespace and its veth alive; each is named in RV(actions).
    type: bool
    default: true
  state:
    description: V(absent) removes every pod this module made and its record.
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.state
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Reports what would change; changes nothing.
  diff_mode:
    description: Before and after text listing the pods, their addresses, links and workloads.
notes:
  - Pod namespaces are created from the node's own mount namespace; a dead C(/run/netns) file
    left by an interrupted run counts as missing and is replaced.
"""

EXAMPLES = r"""
- name: Pods of this node
  flatnet.cluster.pods:
    bridge: cni0
    mtu: 1450
    gateways: [10.244.0.1]
    pods:
      - name: node1-pod-1
        ips: [10.244.0.2/24]
      - name: node1-web
        ips: [10.244.0.3/24]
        command: [python3, -m, http.server, "8080"]

- name: Remove every pod
  flatnet.cluster.pods:
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["add pod node1-pod-1", "node1-pod-1: add address 10.244.0.2/24"]
pods:
  description: The pods after the run, by name.
  returned: always
  type: dict
  sample: {node1-pod-1: {ips: [10.244.0.2/24], veth: veth1a2b3c4d, pid: null}}
diff:
  description: Before and after text of the pods (with C(--diff)).
  returned: when diff mode is on
  type: dict
"""

import ipaddress
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import procs
from ansible_collections.flatnet.cluster.plugins.module_utils import state as state_file
from ansible_collections.flatnet.cluster.plugins.module_utils import workload
from ansible_collections.flatnet.cluster.plugins.module_utils.names import is_pod_name
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import (
    IPError,
    IPRoute2,
    POD_ALIAS_PREFIX,
    RT_PROTO,
    bridge_mac,
    derived_mac,
    global_addrs,
    is_up,
    netns_inode,
    veth_name,
)


class PodsError(Exception):
    """A request or a node state this module refuses to act on."""


# --- the request --------------------------------------------------------------


def family_of(addr):
    return ipaddress.ip_interface(addr).version


def desired_pods(pods):
    """Validated, normalised pods: ``{name: {"ips": [...], "argv": [...] or None}}``."""
    result = {}
    for pod in pods or []:
        name = pod.get("name")
        if not is_pod_name(name):
            raise PodsError(f"pod name {name!r} is not a DNS label (lowercase letters, digits, '-')")
        if name in result:
            raise PodsError(f"pod {name} is declared twice")
        ips = []
        for ip in pod.get("ips") or []:
            if "/" not in str(ip):
                raise PodsError(f"pod {name}: address {ip} has no prefix length (for example {ip}/24)")
            try:
                iface = ipaddress.ip_interface(str(ip))
            except ValueError as exc:
                raise PodsError(f"pod {name}: {exc}") from None
            ips.append(str(iface))
        try:
            argv = workload.argv_of(pod.get("command"))
        except ValueError as exc:
            raise PodsError(f"pod {name}: command {pod.get('command')!r} does not split into arguments ({exc})") from None
        if argv and any("\0" in a for a in argv):
            raise PodsError(f"pod {name}: command {pod.get('command')!r} holds a NUL character")
        result[name] = {"ips": ips, "argv": argv or None}
    return result


def gateways_by_family(gateways):
    result = {}
    for gw in gateways or []:
        try:
            addr = ipaddress.ip_address(str(gw).split("/", maxsplit=1)[0])
        except ValueError:
            raise PodsError(f"gateway {gw} is not an IP address") from None
        if addr.version in result:
            raise PodsError(f"two IPv{addr.version} gateways: {result[addr.version]} and {addr}")
        result[addr.version] = str(addr)
    return result


# --- the plan: desired vs observed -> actions (pure) ---------------------------


def pod_mac(name):
    """The pod's eth0 MAC, derived from its name (locally administered, unicast): a pod
    rebuilt after drift keeps it, so its neighbours' ARP/ND caches stay right."""
    return derived_mac("flatnet-pod:" + name)


def _pod_alias(name):
    return POD_ALIAS_PREFIX + name


def _paired(host, eth0):
    """The host veth and the pod's eth0 are the two ends of one pair."""
    return bool(
        host
        and eth0
        and host.get("link_netnsid") is not None
        and eth0.get("link_index") == host.get("ifindex")
        and host.get("link_index") == eth0.get("ifindex")
    )


def _default_route_ok(routes, gateway):
    return any(
        r.get("dst") == "default" and r.get("gateway") == gateway and r.get("dev") == "eth0"
        for r in routes or []
    )


def owned(name, observed, record):
    """A live netns is ours when recorded, or when our marked veth is paired with its eth0."""
    if name in record.get("pods", {}):
        return True
    host = observed["links"].get(veth_name(name))
    pod = observed["pods"].get(name) or {}
    eth0 = pod.get("links", {}).get("eth0")
    return bool(host and host.get("ifalias") == _pod_alias(name) and _paired(host, eth0))


def plan(desired, observed, record, bridge, mtu, gateways, prune=True):
    """Compute what to do.

    ``observed``: ``netns`` {name: inode or None for a dead file}, ``links`` (node links by
    name, ``ip -details``), ``pods`` {name: {"links": {ifname: link with addr_info},
    "routes": {4: [...], 6: [...]}}} for the live namespaces that were read, ``workloads``
    {name: True when a process of the recorded workload tree still runs}, ``identities``
    {name: the recorded tree identity (see module_utils/workload.py) or None}, ``trees``
    {name: PIDs of that tree}, ``others`` {name: [(pid, comm)] of the other processes in
    the pod's live namespace}.
    Returns a dict of steps (see ``apply``); ``actions`` lists them for humans.
    """
    rec_pods = record.get("pods", {})
    links = observed["links"]
    identities = observed.get("identities") or {}
    trees = observed.get("trees") or {}
    others = observed.get("others") or {}
    steps = {
        "actions": [],
        "errors": [],
        "stop": [],  # (name, workload identity)
        "sweep": [],  # (name, netns inode): pods being removed, every process in them stops
        "pre_pod": {},  # name -> lines, run before the node batch
        "netns_del": [],
        "netns_add": [],
        "node": [],
        "stale": [],  # our host veths whose pod end is elsewhere (an orphaned netns)
        "wait_gone": [],  # host veths that must vanish with their deleted netns
        "pod": {},  # name -> lines
        "start": [],
        "adopt": [],
        "warnings": [],
    }
    act = steps["actions"].append

    if bridge not in links:
        steps["errors"].append(
            f"bridge {bridge} does not exist on this node: run flatnet.cluster.node first"
        )
    # Static neighbour entries both ways (pod -> gateway, bridge -> pod): no pod ARPs for its
    # gateway and the node never ARPs for its pods. Permanent entries do not count against
    # the kernel's neighbour table limit (gc_thresh3), which a node with hundreds of pods, or
    # a lab whose namespaces all share one kernel, otherwise overflows.
    # The gateway's entry needs the fixed MAC that flatnet.cluster.node gives the bridge: a
    # bridge left to itself takes its lowest port's MAC, which moves as pods come and go.
    br_mac = bridge_mac(bridge, gateways.values())
    if br_mac is not None and bridge in links and links[bridge].get("address") != br_mac:
        steps["warnings"].append(
            f"bridge {bridge} has MAC {links[bridge].get('address')}, not the fixed {br_mac} that "
            f"flatnet.cluster.node gives it, so the pods resolve their gateway by ARP/ND; "
            f"run flatnet.cluster.node for {bridge} to fix it")
        br_mac = None
    want_neigh = {}  # pod IP -> (pod MAC, pod name)
    # Same-node pod <-> pod: every pod gets a static entry for each other pod of the node too.
    # In a lab, whose nodes are namespaces of one kernel, the pods' dynamic entries otherwise
    # fill the one shared table (two per same-node pair that talks) and verify fails at 8 x 100.
    peers = {}  # pod IP -> (pod MAC, pod name, family)
    for name in sorted(desired):
        for addr in desired[name]["ips"]:
            peers[str(ipaddress.ip_interface(addr).ip)] = (pod_mac(name), name, family_of(addr))
    if not prune:
        for name, rec in sorted(rec_pods.items()):
            for addr in rec.get("ips") or [] if name not in desired else []:
                peers.setdefault(str(ipaddress.ip_interface(addr).ip), (pod_mac(name), name, family_of(addr)))
    # Pods added in this run: their neighbour entries need no action line of their own.
    fresh = {name for name in desired
             if name not in rec_pods and observed["netns"].get(name, "missing") in ("missing", None)}
    gone_ips = {str(ipaddress.ip_interface(addr).ip)
                for name, rec in rec_pods.items() if name not in desired and prune
                for addr in rec.get("ips") or []}

    # Pods that go: recorded but no longer declared.
    for name in sorted(rec_pods):
        if name in desired or not prune:
            continue
        act(f"remove pod {name}")
        if observed["workloads"].get(name):
            steps["stop"].append((name, identities.get(name)))
            act(f"{name}: stop workload ({_pids(trees.get(name))})")
        host = links.get(veth_name(name))
        host_ours = host is not None and host.get("ifalias") == _pod_alias(name)
        if name in observed["netns"]:
            # The namespace is the pod: whatever else runs in it (a shell someone opened
            # there, a probe agent, copies left by 0.1) goes with it, or it would keep the
            # namespace and its veth alive after the name is gone.
            if observed["netns"][name] is not None:
                steps["sweep"].append((name, observed["netns"][name]))
                if others.get(name):
                    act(f"{name}: stop {len(others[name])} other process(es) in the pod "
                        f"({', '.join(f'{pid} {comm}' for pid, comm in others[name])})")
            steps["netns_del"].append(name)
            if host_ours:
                steps["wait_gone"].append(veth_name(name))
        elif host_ours:
            steps["node"].append(["link", "del", veth_name(name)])

    for name in sorted(desired):
        want = desired[name]
        veth = veth_name(name)
        host = links.get(veth)
        ino = observed["netns"].get(name, "missing")
        pod = observed["pods"].get(name) or {}
        pod_links = pod.get("links", {})
        eth0 = pod_links.get("eth0")
        rec = rec_pods.get(name)

        if ino not in ("missing", None) and not owned(name, observed, record):
            steps["errors"].append(
                f"network namespace {name} exists and was not made by flatnet.cluster; "
                f"delete it or rename the pod"
            )
            continue
        if host is not None and host.get("ifalias") != _pod_alias(name):
            steps["errors"].append(
                f"link {veth} (host end for pod {name}) exists without the marker "
                f"'{_pod_alias(name)}'; it is not ours: delete it or rename the pod"
            )
            continue
        for addr in want["ips"]:
            want_neigh[str(ipaddress.ip_interface(addr).ip)] = (pod_mac(name), name)
        if rec is None and ino not in ("missing", None):
            steps["adopt"].append(name)
            act(f"adopt pod {name} (marked veth found, no record)")

        create_veth = False
        if ino in ("missing", None):
            if ino is None:
                act(f"{name}: remove dead netns file")
                steps["netns_del"].append(name)
            act(f"add pod {name}" if rec is None else f"{name}: recreate missing netns")
            steps["netns_add"].append(name)
            pod_links, eth0 = {}, None
            create_veth = True
        elif not _paired(host, eth0):
            create_veth = True
            if eth0 is not None:
                steps["pre_pod"][name] = [["link", "del", "eth0"]]
                act(f"{name}: delete eth0 (not paired with {veth})")
            act(f"{name}: add veth {veth}")
        if create_veth:
            if host is not None:
                steps["stale"].append(veth)
                act(f"{name}: delete stale {veth}")
            steps["node"] += [
                ["link", "add", veth, "mtu", mtu, "type", "veth", "peer", "name", "eth0",
                 "address", pod_mac(name), "mtu", mtu, "netns", name],
                ["link", "set", veth, "alias", _pod_alias(name)],
                ["link", "set", veth, "master", bridge, "up"],
            ]
            eth0 = {"mtu": mtu, "address": pod_mac(name)}
        else:
            fix = []
            if host.get("mtu") != mtu:
                fix += ["mtu", mtu]
                act(f"{name}: set {veth} mtu {mtu} (was {host.get('mtu')})")
            if host.get("master") != bridge:
                fix += ["master", bridge]
                act(f"{name}: attach {veth} to {bridge}")
            if not is_up(host):
                fix += ["up"]
                act(f"{name}: set {veth} up")
            if fix:
                steps["node"].append(["link", "set", veth] + fix)

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
        current = global_addrs(eth0)
        eth0_changed = create_veth
        for addr in current:
            if addr not in want["ips"]:
                lines.append(["addr", "del", addr, "dev", "eth0"])
                act(f"{name}: remove address {addr}")
                eth0_changed = True
        for addr in want["ips"]:
            if addr not in current:
                extra = ["nodad"] if family_of(addr) == 6 else []
                lines.append(["addr", "add", addr, "dev", "eth0"] + extra)
                act(f"{name}: add address {addr}")
                eth0_changed = True
        if not is_up(eth0):
            lines.append(["link", "set", "eth0", "up"])
            if not create_veth:
                act(f"{name}: set eth0 up")
            eth0_changed = True
        for fam in sorted({family_of(a) for a in want["ips"]}):
            gw = gateways.get(fam)
            if gw is None:
                continue
            # Changing eth0's addresses or link state drops routes via it: always re-add then.
            if eth0_changed or not _default_route_ok(pod.get("routes", {}).get(fam), gw):
                lines.append(["route", "replace", "default", "via", gw, "dev", "eth0",
                              "proto", RT_PROTO])
                if not create_veth:
                    act(f"{name}: set default route via {gw}")
        fams = {family_of(a) for a in want["ips"]}
        want_pod_neigh = {} if br_mac is None else {
            gateways[fam]: (br_mac, None) for fam in fams if fam in gateways}
        for dst, (mac, other, fam) in peers.items():
            if other != name and fam in fams:
                want_pod_neigh[dst] = (mac, other)
        for dst, (mac, other) in sorted(want_pod_neigh.items()):
            if (pod_neigh.get(dst) or {}).get("lladdr") != mac:
                lines.append(["neigh", "replace", dst, "lladdr", mac, "dev", "eth0",
                              "nud", "permanent", "proto", RT_PROTO])
                # A new pod, or an entry for a new pod, is said by "add pod ...".
                if not create_veth and other not in fresh:
                    act(f"{name}: set static neighbour {dst} lladdr {mac}"
                        + (f" (pod {other})" if other else ""))
        for dst, entry in sorted(pod_neigh.items()):
            if dst not in want_pod_neigh and entry.get("protocol") == str(RT_PROTO):
                lines.append(["neigh", "del", dst, "dev", "eth0"])
                # The entries for a pod removed in this run are said by "remove pod ...".
                if dst not in gone_ips:
                    act(f"{name}: remove static neighbour {dst}")
        if lines:
            steps["pod"][name] = lines

        # Workload: the recorded process tree, whatever it exec'd or forked since.
        argv = want["argv"]
        rec_argv = (rec or {}).get("command")
        running = observed["workloads"].get(name, False)
        ident = identities.get(name) or {}
        same_ns = ino not in ("missing", None) and ino == ident.get("netns_inode")
        ok = running and same_ns and argv == rec_argv
        if running and not ok:
            steps["stop"].append((name, identities.get(name)))
            why = "command changed" if argv != rec_argv else "netns replaced"
            if argv is None:
                why = "command removed"
            act(f"{name}: stop workload ({_pids(trees.get(name))}; {why})")
        if argv and not ok:
            steps["start"].append(name)
            if rec_argv and not running and argv == rec_argv:
                act(f"{name}: restart workload {' '.join(argv)} (was dead)")
                if others.get(name):
                    steps["warnings"].append(
                        f"pod {name}: its workload is gone, but other processes run in its network "
                        f"namespace ({', '.join(f'{pid} {comm}' for pid, comm in others[name])}). A "
                        f"command that starts a new session and clears its environment (a daemon) "
                        f"cannot be tracked and is started again on every run: run it in the "
                        f"foreground")
            else:
                act(f"{name}: start workload {' '.join(argv)}")

    if not prune:
        for name, rec in rec_pods.items():
            for addr in rec.get("ips") or [] if name not in desired else []:
                want_neigh.setdefault(str(ipaddress.ip_interface(addr).ip), (pod_mac(name), name))
    have = observed.get("bridge_neigh") or {}
    for addr, (mac, name) in sorted(want_neigh.items()):
        if (have.get(addr) or {}).get("lladdr") != mac:
            steps["node"].append(["neigh", "replace", addr, "lladdr", mac, "dev", bridge,
                                  "nud", "permanent", "proto", RT_PROTO])
            if name not in fresh:
                act(f"{name}: set static neighbour {addr} lladdr {mac} on {bridge}")
    for addr, entry in sorted(have.items()):
        if addr not in want_neigh and entry.get("protocol") == str(RT_PROTO):
            steps["node"].append(["neigh", "del", addr, "dev", bridge])
            act(f"remove static neighbour {addr} from {bridge}")
    return steps


def _pids(pids):
    pids = list(pids or [])
    if not pids:
        return "no process left"
    return ("pid " if len(pids) == 1 else "pids ") + " ".join(str(p) for p in pids)


def needs_change(steps):
    return bool(steps["actions"])


# --- describing (for --diff) ----------------------------------------------------


def describe_observed(names, observed, record, bridge, gateways):
    lines = []
    br_mac = (observed["links"].get(bridge) or {}).get("address")
    gateway_entries = br_mac == bridge_mac(bridge, gateways.values())
    pod_addrs = {}  # pod IP -> pod name, from what the pods carry
    for name in sorted(names):
        eth0 = ((observed["pods"].get(name) or {}).get("links") or {}).get("eth0") or {}
        for addr in global_addrs(eth0):
            pod_addrs[addr.split("/")[0]] = name
    for name in sorted(names):
        ino = observed["netns"].get(name, "missing")
        if ino == "missing":
            continue
        if ino is None:
            lines.append(f"pod {name}: dead netns file")
            continue
        pod = observed["pods"].get(name) or {}
        eth0 = pod.get("links", {}).get("eth0")
        host = observed["links"].get(veth_name(name))
        parts = [f"ips {','.join(sorted(global_addrs(eth0 or {}))) or '-'}"]
        if not _paired(host, eth0):
            parts.append(f"veth {veth_name(name)} missing")
        else:
            parts.append(f"veth {veth_name(name)}")
            parts.append(f"mtu {eth0.get('mtu')}" if eth0.get("mtu") == host.get("mtu")
                         else f"mtu eth0 {eth0.get('mtu')} {veth_name(name)} {host.get('mtu')}")
            state = "up" if is_up(eth0) and is_up(host) else "down"
            parts.append(f"link {state} in {host.get('master') or '-'}")
        gws = sorted(r.get("gateway") for routes in pod.get("routes", {}).values()
                     for r in routes or [] if r.get("dst") == "default" and r.get("gateway"))
        parts.append(f"gateway {','.join(gws) or '-'}")
        have = {(n.get("dst"), n.get("lladdr")) for n in pod.get("neigh") or [] if n.get("dev") == "eth0"}
        missing = [gw for gw in gws if gateway_entries and (gw, br_mac) not in have]
        bridge_neigh = observed.get("bridge_neigh") or {}
        missing += [f"{ip.split('/')[0]} on {bridge}" for ip in sorted(global_addrs(eth0 or {}))
                    if (bridge_neigh.get(ip.split("/")[0]) or {}).get("lladdr") != pod_mac(name)]
        fams = {family_of(a) for a in global_addrs(eth0 or {})}
        peers = [f"{ip} (pod {other})" for ip, other in sorted(pod_addrs.items())
                 if other != name and family_of(ip) in fams and (ip, pod_mac(other)) not in have]
        missing += peers[:3] + ([f"{len(peers) - 3} more pods"] if len(peers) > 3 else [])
        if missing:
            parts.append(f"static neighbours missing: {', '.join(missing)}")
        rec = record.get("pods", {}).get(name) or {}
        if rec.get("command"):
            alive = observed["workloads"].get(name)
            parts.append(f"workload {' '.join(rec['command'])}" + ("" if alive else " (dead)"))
        lines.append(f"pod {name}: " + "; ".join(parts))
    return "\n".join(lines) + ("\n" if lines else "")


def describe_desired(desired, bridge, mtu, gateways):
    lines = []
    for name in sorted(desired):
        want = desired[name]
        fams = sorted({family_of(a) for a in want["ips"]})
        gws = sorted(gateways[f] for f in fams if f in gateways)
        parts = [f"ips {','.join(sorted(want['ips'])) or '-'}", f"veth {veth_name(name)}", f"mtu {mtu}",
                 f"link up in {bridge}",
                 f"gateway {','.join(gws) or '-'}"]
        if want["argv"]:
            parts.append(f"workload {' '.join(want['argv'])}")
        lines.append(f"pod {name}: " + "; ".join(parts))
    return "\n".join(lines) + ("\n" if lines else "")


# --- reading and applying (the kernel side) ------------------------------------


def read_netns(ip):
    """Named namespaces: ``{name: inode}``, inode None for a dead file."""
    return {name: netns_inode(name) for name in ip.netns_list()}


def observe(ip, desired, record, bridge):
    """Read the node once: namespaces, node links, then every relevant pod concurrently
    (one ``ip -n POD -json -batch`` each, plus one ``-6`` route read for IPv6 pods)."""
    # One process for the node's links and its permanent neighbour entries.
    links, neigh = ip.json_batch([["link", "show"], ["neigh", "show", "nud", "permanent"]],
                                 details=True)
    observed = {"netns": read_netns(ip), "links": {link["ifname"]: link for link in links},
                "pods": {}, "workloads": {},
                "bridge_neigh": {n["dst"]: n for n in neigh if n.get("dev") == bridge}}
    jobs = {}
    for name in sorted(set(desired) | set(record.get("pods", {}))):
        if observed["netns"].get(name) is None:
            continue
        jobs[(name, 4)] = ([["addr", "show"], ["route", "show", "default"],
                            ["neigh", "show", "nud", "permanent"]], name, None, True)
        if any(family_of(a) == 6 for a in desired.get(name, {}).get("ips", [])):
            jobs[(name, 6)] = ([["route", "show", "default"]], name, 6, True)
    try:
        results = ip.many(jobs)
    except IPError:
        # A namespace vanished or is unusable meanwhile: read one by one, treat failures as missing.
        results = {}
        for key, job in jobs.items():
            try:
                results.update(ip.many({key: job}))
            except IPError:
                observed["netns"][key[0]] = None
    for (name, fam), docs in sorted(results.items()):
        if observed["netns"].get(name) is None:
            continue
        pod = observed["pods"].setdefault(name, {"links": {}, "routes": {}})
        if fam == 4:
            pod["links"] = {link["ifname"]: link for link in docs[0]}
            pod["routes"][4] = docs[1]
            pod["neigh"] = docs[2]
        else:
            pod["routes"][6] = docs[0]
    observe_workloads(observed, desired, record)
    return observed


def record_identity(rec):
    """The workload identity of a pod record; a 0.1 record (pid, command, netns_inode, no
    ``workload``) is matched the old way, once: the caller rewrites it."""
    if "workload" in rec:
        return rec["workload"]
    if rec.get("pid") and rec.get("command"):
        return workload.legacy_identity(rec["pid"], rec["command"], rec.get("netns_inode"))
    return None


def observe_workloads(observed, desired, record, snap=None):
    """Fill ``identities``, ``trees``, ``workloads`` and ``others`` of ``observed`` from
    one scan of /proc."""
    snap = procs.snapshot() if snap is None else snap
    observed.update(identities={}, trees={}, others={})
    for name, rec in record.get("pods", {}).items():
        ident = record_identity(rec)
        tree = workload.members(ident, snap)
        observed["identities"][name] = ident
        observed["trees"][name] = tree
        observed["workloads"][name] = bool(tree)
    for name in sorted(set(desired) | set(record.get("pods", {}))):
        ino = observed["netns"].get(name)
        if ino is None:
            continue
        tree = set(observed["trees"].get(name) or [])
        observed["others"][name] = [(p["pid"], p["comm"]) for p in workload.in_netns(ino, snap)
                                    if p["pid"] not in tree]


def upgraded_record(record, observed):
    """``record`` with every 0.1 pod entry rewritten with its workload identity."""
    pods = {}
    for name, rec in record.get("pods", {}).items():
        if "workload" not in rec:
            ident = (observed.get("identities") or {}).get(name)
            rec = dict(rec, workload=ident, pid=ident["sid"] if ident else None)
        pods[name] = rec
    return dict(record, pods=pods)


def wait_links_gone(ip, names, timeout=3.0):
    """``ip netns del`` returns before the kernel drops the veths; wait, then delete leftovers."""
    deadline = time.monotonic() + timeout
    left = set(names)
    while left and time.monotonic() < deadline:
        left &= set(ip.links())
        if left:
            time.sleep(0.05)
    left &= set(ip.links())
    if left:
        ip.batch([["link", "del", n] for n in sorted(left)], force=True)


def apply(module, ip, steps, desired, record, state_dir):  # noqa: C901 (one ordered sequence)
    pods_path = os.path.join(state_dir, "pods.json")
    rec_pods = dict(record.get("pods", {}))
    # Record intent first: a run interrupted after `netns add` leaves namespaces that the
    # next run recognises as its own.
    intent = {"pods": dict(rec_pods)}
    for name, want in desired.items():
        old = rec_pods.get(name, {})
        intent["pods"][name] = dict(old, ips=want["ips"], veth=veth_name(name))
        intent["pods"][name].setdefault("command", None)
        intent["pods"][name].setdefault("pid", None)
        intent["pods"][name].setdefault("netns_inode", None)
        intent["pods"][name].setdefault("workload", None)
    if intent != {"pods": rec_pods}:
        state_file.save(pods_path, intent)

    for name, ident in steps["stop"]:
        _signalled, left = workload.stop_tree(ident)
        if left:
            # Still there after KILL (uninterruptible sleep): keep the identity, the next run retries.
            steps["late_warnings"].append(
                f"pod {name}: workload processes {workload.describe(left)} did not stop")
            continue
        intent["pods"][name]["pid"] = None
        intent["pods"][name]["workload"] = None
    for name, ino in steps["sweep"]:
        # Only the namespace the name still points at (that bind mount keeps its inode ours).
        if netns_inode(name) == ino:
            _signalled, left = workload.stop_netns(ino)
            if left:
                steps["late_warnings"].append(
                    f"pod {name}: processes {workload.describe(left)} did not stop and keep "
                    f"its network namespace alive")
    for name, lines in steps["pre_pod"].items():
        ip.batch(lines, netns=name)
    if steps["stale"]:
        # A stale veth may vanish by itself meanwhile (its namespace died with the workload
        # just stopped), so a failed delete is fine as long as the link ends up gone.
        try:
            ip.batch([["link", "del", veth] for veth in steps["stale"]], force=True)
        except IPError:
            pass
        wait_links_gone(ip, steps["stale"])
    # One node-level batch: namespaces (from the node's own mount namespace, so the
    # /run/netns bind mounts are visible to everyone), then the veths.
    node_lines = ([["netns", "del", n] for n in steps["netns_del"]]
                  + [["netns", "add", n] for n in steps["netns_add"]] + steps["node"])
    ip.batch(node_lines)
    for name in steps["netns_del"]:
        if name not in desired:
            intent["pods"].pop(name, None)
    if steps["wait_gone"]:
        wait_links_gone(ip, steps["wait_gone"])
    ip.many({name: (lines, name, None, False) for name, lines in steps["pod"].items()})

    final = {"pods": {}}
    for name, want in desired.items():
        entry = dict(intent["pods"][name])
        entry["netns_inode"] = netns_inode(name)
        entry["command"] = want["argv"]
        final["pods"][name] = entry
    if not module.params["prune"]:
        for name, rec in rec_pods.items():
            final["pods"].setdefault(name, rec)
    for name in desired:
        if not desired[name]["argv"] or name in steps["start"]:
            final["pods"][name]["pid"] = None
            final["pods"][name]["workload"] = None
    log_dir = os.path.join(state_dir, "logs")
    for name in steps["start"]:
        argv = desired[name]["argv"]
        ident = workload.launch(ip.ip, name, argv, os.path.join(log_dir, f"{name}.log"))
        final["pods"][name]["workload"] = ident
        final["pods"][name]["pid"] = ident["sid"]
        # Recorded before the next one starts: an interrupted run knows all it started.
        state_file.save(pods_path, final)
        if not workload.wait_tree(ident):
            final["pods"][name]["pid"] = None
            final["pods"][name]["workload"] = None
            state_file.save(pods_path, final)
            module.fail_json(msg=f"pod {name}: workload {' '.join(argv)} exited at once; "
                                 f"see {os.path.join(log_dir, name + '.log')}")
    return final


def result_pods(desired, final_pods):
    return {
        name: {"ips": desired[name]["ips"], "veth": veth_name(name),
               "pid": (final_pods.get(name) or {}).get("pid")}
        for name in sorted(desired)
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bridge=dict(type="str", default="cni0"),
            mtu=dict(type="int", default=1500),
            gateways=dict(type="list", elements="str", default=[]),
            pods=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                ips=dict(type="list", elements="str", default=[]),
                command=dict(type="raw"),
                labels=dict(type="dict"),
            )),
            prune=dict(type="bool", default=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=state_file.state_dir_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    state_dir = p["state_dir"]
    pods_path = os.path.join(state_dir, "pods.json")
    absent = p["state"] == "absent"
    try:
        desired = {} if absent else desired_pods(p["pods"])
        gateways = gateways_by_family(p["gateways"])
    except PodsError as exc:
        module.fail_json(msg=str(exc))
    if absent:
        module.params["prune"] = True

    ip = IPRoute2(module)
    loaded = state_file.load_or_fail(module, pods_path)
    loaded.setdefault("pods", {})
    try:
        observed = observe(ip, desired, loaded, p["bridge"])
    except IPError as exc:
        module.fail_json(msg=str(exc))
    record = upgraded_record(loaded, observed)
    steps = plan(desired, observed, record, p["bridge"], p["mtu"], gateways, prune=p["prune"])
    if absent:
        # An absent run never needs the bridge.
        steps["errors"] = [e for e in steps["errors"] if not e.startswith("bridge ")]
    errors = steps["errors"]
    if errors and not (module.check_mode and all(e.startswith("bridge ") for e in errors)):
        module.fail_json(msg="; ".join(errors), actions=steps["actions"])
    warnings = list(errors) + steps["warnings"]
    changed = needs_change(steps)
    if absent and os.path.exists(pods_path):
        changed = True
    result = dict(changed=changed, actions=steps["actions"])
    if warnings:
        result["warnings"] = warnings
    if module._diff:
        result["diff"] = {
            "before": describe_observed(set(desired) | set(record["pods"]), observed, record,
                                        p["bridge"], gateways),
            "after": describe_desired(desired, p["bridge"], p["mtu"], gateways),
        }
    if module.check_mode or not changed:
        if record != loaded and not module.check_mode:
            # A 0.1 record: rewritten with the identities found, nothing on the node changes.
            state_file.save(pods_path, record)
        result["pods"] = result_pods(desired, record["pods"])
        module.exit_json(**result)

    steps["late_warnings"] = []
    try:
        final = apply(module, ip, steps, desired, record, state_dir)
    except (IPError, OSError) as exc:
        module.fail_json(msg=str(exc), actions=steps["actions"])
    if steps["late_warnings"]:
        result["warnings"] = result.get("warnings", []) + steps["late_warnings"]
    log_dir = os.path.join(state_dir, "logs")
    for name in set(record["pods"]) - set(final["pods"]):
        state_file.remove(os.path.join(log_dir, f"{name}.log"))
    if absent:
        state_file.remove(pods_path)
        state_file.remove_dir_if_empty(log_dir)
        state_file.remove_dir_if_empty(state_dir)
    elif final != loaded:
        state_file.save(pods_path, final)
    result["pods"] = result_pods(desired, final["pods"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
