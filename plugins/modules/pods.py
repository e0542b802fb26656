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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import procs
from ansible_collections.flatnet.cluster.plugins.module_utils import reconcile
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils import workload
from ansible_collections.flatnet.cluster.plugins.module_utils.names import is_pod_name
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import global_addrs, IPRoute2, is_up, netns_inode
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError
from ansible_collections.flatnet.cluster.plugins.module_utils.names import bridge_mac, veth_name
from ansible_collections.flatnet.cluster.plugins.module_utils.pods_plan import (
    family_of,
    needs_change,
    plan,
    pod_mac,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.reconcile import paired


class PodsError(Exception):
    """A request or a node state this module refuses to act on."""


# --- the request --------------------------------------------------------------


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
        if not paired(host, eth0):
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
    # A namespace that vanished or is unusable meanwhile counts as missing.
    results, failed = ip.many_each(jobs)
    for key in failed:
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


def observe_workloads(observed, desired, record, snap=None):
    """Fill ``identities``, ``trees``, ``workloads`` and ``others`` of ``observed`` from
    one scan of /proc."""
    snap = procs.snapshot() if snap is None else snap
    observed.update(identities={}, trees={}, others={})
    for name, rec in record.get("pods", {}).items():
        ident = rec.get("workload")
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


def _record_intent(pods_path, desired, rec_pods):
    """Record intent first: a run interrupted after `netns add` leaves namespaces that the
    next run recognises as its own."""
    intent = {"pods": dict(rec_pods)}
    for name, want in desired.items():
        old = rec_pods.get(name, {})
        intent["pods"][name] = dict(old, ips=want["ips"], veth=veth_name(name))
        intent["pods"][name].setdefault("command", None)
        intent["pods"][name].setdefault("pid", None)
        intent["pods"][name].setdefault("netns_inode", None)
        intent["pods"][name].setdefault("workload", None)
    if intent != {"pods": rec_pods}:
        flatnet_state.save(pods_path, intent)
    return intent


def _stop_processes(pods_plan, intent):
    """Stop the workloads that go, then sweep the namespaces of the pods that go; returns
    the warnings for processes that would not stop."""
    warnings = []
    for name, ident in pods_plan.stop:
        _signalled, left = workload.stop_tree(ident)
        if left:
            # Still there after KILL (uninterruptible sleep): keep the identity, the next run retries.
            warnings.append(f"pod {name}: workload processes {workload.describe(left)} did not stop")
            continue
        intent["pods"][name]["pid"] = None
        intent["pods"][name]["workload"] = None
    for name, ino in pods_plan.sweep:
        # Only the namespace the name still points at (that bind mount keeps its inode ours).
        if netns_inode(name) == ino:
            _signalled, left = workload.stop_netns(ino)
            if left:
                warnings.append(
                    f"pod {name}: processes {workload.describe(left)} did not stop and keep "
                    f"its network namespace alive")
    return warnings


def _final_record(pods_plan, desired, intent, rec_pods, prune):
    final = {"pods": {}}
    for name, want in desired.items():
        entry = dict(intent["pods"][name])
        entry["netns_inode"] = netns_inode(name)
        entry["command"] = want["argv"]
        final["pods"][name] = entry
    if not prune:
        for name, rec in rec_pods.items():
            final["pods"].setdefault(name, rec)
    for name in desired:
        if not desired[name]["argv"] or name in pods_plan.start:
            final["pods"][name]["pid"] = None
            final["pods"][name]["workload"] = None
    return final


def _start_workloads(module, ip, pods_plan, desired, final, pods_path, log_dir):
    for name in pods_plan.start:
        argv = desired[name]["argv"]
        ident = workload.launch(ip.ip, name, argv, os.path.join(log_dir, f"{name}.log"))
        final["pods"][name]["workload"] = ident
        final["pods"][name]["pid"] = ident["sid"]
        # Recorded before the next one starts: an interrupted run knows all it started.
        flatnet_state.save(pods_path, final)
        if not workload.wait_tree(ident):
            final["pods"][name]["pid"] = None
            final["pods"][name]["workload"] = None
            flatnet_state.save(pods_path, final)
            module.fail_json(msg=f"pod {name}: workload {' '.join(argv)} exited at once; "
                                 f"see {os.path.join(log_dir, name + '.log')}")


def apply(module, ip, pods_plan, desired, record, state_dir):
    """Record intent, stop what goes, run the plan's batches (links and namespaces, then
    inside the pods), record the result and start the workloads. Returns the final record
    and the warnings of processes that would not stop."""
    pods_path = os.path.join(state_dir, "pods.json")
    rec_pods = dict(record.get("pods", {}))
    intent = _record_intent(pods_path, desired, rec_pods)
    late_warnings = _stop_processes(pods_plan, intent)
    reconcile.apply(ip, pods_plan)
    final = _final_record(pods_plan, desired, intent, rec_pods, module.params["prune"])
    _start_workloads(module, ip, pods_plan, desired, final, pods_path, os.path.join(state_dir, "logs"))
    return final, late_warnings


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
            state_dir=flatnet_state.state_dir_spec(),
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

    try:
        ip = IPRoute2(module)
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    record = flatnet_state.load_or_fail(module, pods_path)
    record.setdefault("pods", {})
    try:
        observed = observe(ip, desired, record, p["bridge"])
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    pods_plan = plan(desired, observed, record, p["bridge"], p["mtu"], gateways, prune=p["prune"])
    if absent:
        # An absent run never needs the bridge.
        pods_plan.errors = [e for e in pods_plan.errors if e.kind != "bridge"]
    errors = pods_plan.errors
    if errors and not (module.check_mode and all(e.kind == "bridge" for e in errors)):
        module.fail_json(msg="; ".join(errors), actions=pods_plan.actions)
    warnings = [str(e) for e in errors] + pods_plan.warnings
    changed = needs_change(pods_plan)
    if absent and os.path.exists(pods_path):
        changed = True
    result = dict(changed=changed, actions=pods_plan.actions)
    if warnings:
        result["warnings"] = warnings
    if module._diff:
        result["diff"] = {
            "before": describe_observed(set(desired) | set(record["pods"]), observed, record,
                                        p["bridge"], gateways),
            "after": describe_desired(desired, p["bridge"], p["mtu"], gateways),
        }
    if module.check_mode or not changed:
        result["pods"] = result_pods(desired, record["pods"])
        module.exit_json(**result)

    try:
        final, late_warnings = apply(module, ip, pods_plan, desired, record, state_dir)
    except (KernelError, OSError) as exc:
        module.fail_json(msg=str(exc), actions=pods_plan.actions)
    if late_warnings:
        result["warnings"] = result.get("warnings", []) + late_warnings
    log_dir = os.path.join(state_dir, "logs")
    for name in set(record["pods"]) - set(final["pods"]):
        flatnet_state.remove(os.path.join(log_dir, f"{name}.log"))
    if absent:
        flatnet_state.remove(pods_path)
        flatnet_state.remove_dir_if_empty(log_dir)
        flatnet_state.remove_dir_if_empty(state_dir)
    elif final != record:
        flatnet_state.save(pods_path, final)
    result["pods"] = result_pods(desired, final["pods"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
