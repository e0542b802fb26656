#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: peers
short_description: Program the routes to every other node's pod CIDRs (host-gw and VXLAN)
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - One call per node programs the routes to all peers of the node, as planned by
    M(flatnet.cluster.plan) (C(flatnet_plan.nodes[node].peers)).
  - A C(direct) peer gets a host-gw route C(pod_cidr via underlay_ip dev underlay_interface).
    Every direct peer's underlay IP must be on-link for O(underlay_interface) (inside a connected
    route of it); otherwise the module fails before changing anything, naming the peers.
  - A C(vxlan) peer gets, in this order, a permanent neighbour entry (VTEP IP to VTEP MAC), a
    permanent FDB entry (VTEP MAC to underlay IP) and the route C(pod_cidr via vtep_ip dev DEVICE
    onlink), so the kernel never has to resolve anything. The VXLAN device exists only while some
    peer is C(vxlan); it is recreated when its VNI, port, local IP or underlay device differ, and
    its MAC and MTU are fixed in place.
  - Ownership is by record. C(peers.json) (under O(state_dir)) names the VXLAN device the module
    made, written before the device is made. When the device name, VNI or port changes, the
    old device is deleted (only if it is recorded and still carries ifalias C(flatnet)) before
    the new one is made. A device name that exists without the marker is refused; a link that
    is not recorded is never deleted. A C(peers.json) that is not a JSON object fails the
    task, naming the file, before any change.
  - Every route the module makes carries C(proto 157); routes of any other protocol are never
    replaced or deleted (a peer pod CIDR that already has such a route is an error).
    Routes, neighbour and FDB entries of peers that are no longer declared are deleted.
  - An IPv6 pod CIDR of a C(direct) peer with an IPv4 underlay IP cannot be routed (the kernel
    has no IPv6 route through an IPv4 gateway); it is skipped with a warning.
  - Changes are applied with one C(ip -batch) and one C(bridge -batch) process.
options:
  underlay_interface:
    description: Underlay interface of this node; the device of the host-gw routes.
    type: str
  peers:
    description:
      - Every other node of the cluster, as the P(flatnet.cluster.peers_of#filter) filter lists
        them from the plan. Each entry is a mapping or a peer line.
      - "A mapping has the keys C(name) (peer node name, required), C(mode) (how the peer is
        reached: V(direct) or V(vxlan); default V(direct)), C(underlay_ip) (the peer's underlay
        IP: host-gw gateway or VXLAN tunnel endpoint; required), C(pod_cidrs) (the peer's pod
        CIDRs, one per family), C(vtep_ips) (its VTEP IPs, the network address of each pod CIDR;
        used by V(vxlan)) and C(vtep_mac) (its VTEP MAC; required for V(vxlan))."
      - "A peer line holds the same fields in one string, C(NAME MODE UNDERLAY_IP POD_CIDRS
        VTEP_IPS VTEP_MAC), lists joined with commas and V(-) for an empty list or no MAC
        (C(peers_of(node, lines=true)) writes them). One string per peer keeps the arguments of
        a node with a thousand peers small: Ansible loads, copies and scans every value of them."
      - The module checks the entries itself and fails naming the entry and the field.
    type: list
    elements: raw
    default: []
  vxlan:
    description: This node's VXLAN device; only used while some peer is C(vxlan).
    type: dict
    default: {}
    suboptions:
      device:
        description: Name of the VXLAN device (ifalias C(flatnet) marks it as ours).
        type: str
        default: flatnet.1
      vni:
        description: VXLAN network identifier.
        type: int
        default: 1
      port:
        description: UDP destination port.
        type: int
        default: 8472
      local_ip:
        description: This node's underlay IP (tunnel source).
        type: str
      mac:
        description: This node's VTEP MAC.
        type: str
      addresses:
        description:
          - This node's VTEP IPs, as V(/32) or V(/128) (flannel style, so no connected route to
            other nodes' pod CIDRs appears).
        type: list
        elements: str
        default: []
      mtu:
        description: MTU of the device (the pod MTU).
        type: int
      underlay_interface:
        description: Underlay device of the tunnel; defaults to O(underlay_interface).
        type: str
  state:
    description:
      - V(present) programs the peers.
      - V(absent) deletes every C(proto 157) route and the VXLAN devices recorded in C(peers.json) that
        carry ifalias C(flatnet) (a marked device without a record is left, with a warning).
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.state
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Reports what would change without changing it.
  diff_mode:
    description: Shows the routing state (device, neighbours, FDB, routes) before and after.
requirements:
  - iproute2 (C(ip) and C(bridge))
"""

EXAMPLES = r"""
- name: Program routes to every other node
  flatnet.cluster.peers:
    underlay_interface: "{{ flatnet_plan.nodes[inventory_hostname].underlay.interface }}"
    peers: "{{ flatnet_plan.nodes[inventory_hostname].peers }}"
    vxlan:
      device: "{{ flatnet_plan.vxlan.device }}"
      vni: "{{ flatnet_plan.vxlan.vni }}"
      port: "{{ flatnet_plan.vxlan.port }}"
      local_ip: "{{ flatnet_plan.nodes[inventory_hostname].underlay.ip }}"
      mac: "{{ flatnet_plan.nodes[inventory_hostname].vtep_mac }}"
      addresses: "{{ flatnet_plan.nodes[inventory_hostname].vtep_ips }}"
      mtu: "{{ flatnet_plan.mtu }}"

- name: Remove every route and the VXLAN device
  flatnet.cluster.peers:
    state: absent
"""

RETURN = r"""
actions:
  description: What was (or, in check mode, would be) done, in order.
  returned: always
  type: list
  elements: str
  sample: ["add route 10.244.1.0/24 via 192.168.50.12 dev eth0"]
peers:
  description:
    - Per peer, its mode and the routes it should have.
    - Only when something changed (or would change, in check mode) or with C(--diff). An unchanged
      run on a node with a thousand peers returns the counts alone, since Ansible scans every value
      of a result.
  returned: with O(state=present), when something changed or in diff mode
  type: list
  elements: dict
  sample: [{"name": "node2", "mode": "direct", "underlay_ip": "192.168.50.12",
            "pod_cidrs": ["10.244.1.0/24"], "routes": ["10.244.1.0/24 via 192.168.50.12 dev eth0"]}]
counts:
  description: How many peers (in all, direct and vxlan) and routes the node should have.
  returned: when O(state=present)
  type: dict
  sample: {"peers": 2, "direct": 1, "vxlan": 1, "routes": 2}
skipped:
  description: Pod CIDRs that cannot be routed and were left out, with the reason.
  returned: always
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils import reconcile
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import IPRoute2
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError
from ansible_collections.flatnet.cluster.plugins.module_utils.names import ALIAS
from ansible_collections.flatnet.cluster.plugins.module_utils.peers_reconcile import (
    PeersError,
    check_direct_on_link,
    check_peers,
    desired_state,
    parse_addrs,
    parse_device,
    parse_fdb,
    parse_neigh,
    parse_routes,
    plan_absent,
    plan_present,
    recorded_devices,
    render_current,
    render_desired,
)

VXLAN_SPEC = dict(
    device=dict(type="str", default="flatnet.1"),
    vni=dict(type="int", default=1),
    port=dict(type="int", default=8472),
    local_ip=dict(type="str"),
    mac=dict(type="str"),
    addresses=dict(type="list", elements="str", default=[]),
    mtu=dict(type="int"),
    underlay_interface=dict(type="str"),
)


class Kernel:
    """Reads and writes of the routing state, through ``ip`` and ``bridge``."""

    def __init__(self, module):
        self.module = module
        self.ip = IPRoute2(module)

    def routes(self):
        return self.ip.json(["-4", "route", "show", "table", "main"]) + self.ip.json(
            ["-6", "route", "show", "table", "main"]
        )

    def device(self, dev):
        rc, out, _err = self.ip.run(["-json", "-details", "link", "show", "dev", dev], check=False)
        if rc != 0 or not out.strip():
            return None
        links = json.loads(out)
        return links[0] if links else None

    def device_state(self, dev):
        """Addresses, neighbours and FDB entries of the device (it must exist)."""
        addrs = parse_addrs(self.ip.json(["addr", "show", "dev", dev]))
        neigh = parse_neigh(self.ip.json(["neigh", "show", "dev", dev]))
        fdb = parse_fdb(self.ip.bridge_json(["fdb", "show", "dev", dev]))
        return addrs, neigh, fdb

    def apply(self, plan):
        reconcile.apply(self.ip, plan)


def summary(peers, desired):
    # Routes grouped once: a scan of every route per peer is quadratic, 1,000 peers are 10^6 steps.
    by_peer = {}
    for route in (desired["routes"].values() if desired else []):
        by_peer.setdefault(route.peer, []).append(route.text())
    result = []
    for peer in sorted(peers, key=lambda p: p["name"]):
        routes = by_peer.get(peer["name"], [])
        result.append({
            "name": peer["name"], "mode": peer["mode"], "underlay_ip": peer["underlay_ip"],
            "pod_cidrs": list(peer["pod_cidrs"]), "routes": sorted(routes),
        })
    return result


def record_peers(peers):
    """The peers as peers.json records them (the summary without routes)."""
    return [{"name": peer["name"], "mode": peer["mode"], "underlay_ip": peer["underlay_ip"],
             "pod_cidrs": list(peer["pod_cidrs"])} for peer in sorted(peers, key=lambda p: p["name"])]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            underlay_interface=dict(type="str"),
            # Checked by check_peers, not by suboptions: see the option's documentation.
            peers=dict(type="list", elements="raw", default=[]),
            vxlan=dict(type="dict", options=VXLAN_SPEC, default={}),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    vxlan = p["vxlan"] or {}
    dev = vxlan.get("device") or "flatnet.1"
    state_file = os.path.join(p["state_dir"], "peers.json")
    result = dict(changed=False, actions=[], skipped=[])
    # A corrupt record fails here, before anything is read or changed.
    record = flatnet_state.load_or_fail(module, state_file)
    recorded = recorded_devices(record)

    try:
        kernel = Kernel(module)
        desired = None
        peers = []
        if p["state"] == "present":
            peers = check_peers(p["peers"])
            desired = desired_state(peers, p["underlay_interface"], vxlan)
        route_json = kernel.routes()
        routes = parse_routes(route_json)
        link = parse_device(kernel.device(dev))
        if link is not None and link["ours"]:
            dev_addrs, neigh, fdb = kernel.device_state(dev)
        else:
            dev_addrs, neigh, fdb = [], {}, []
        # Devices under other names are deleted only when recorded AND marked as ours.
        retire = []
        for name in recorded:
            if name == dev and p["state"] == "present":
                continue  # the configured device: reconciled below
            old = parse_device(kernel.device(name))
            if old is None:
                continue
            if old["ours"]:
                retire.append(old)
            else:
                module.warn(f"link {name} is recorded in {state_file} as a VXLAN device but does "
                            f"not carry ifalias '{ALIAS}'; left in place")
        if p["state"] == "absent" and link is not None and link["ours"] and dev not in recorded:
            module.warn(f"link {dev} carries ifalias '{ALIAS}' but is not recorded in {state_file}; "
                        "left in place (run the deploy once to record it, or delete it by hand)")

        if desired is not None:
            check_direct_on_link(desired["direct_gateways"], route_json, p["underlay_interface"])
            plan = plan_present(desired, routes, link, dev_addrs, neigh, fdb, retire=retire)
            # The per-peer summary and the --diff text cost as much as the rest of an unchanged
            # run with 1,000 peers: made only when they are returned.
            if plan.changed or module._diff:
                result["peers"] = summary(peers, desired)
            modes = [peer["mode"] for peer in peers]
            result["counts"] = {"peers": len(peers), "direct": modes.count("direct"),
                                "vxlan": modes.count("vxlan"), "routes": len(desired["routes"])}
            result["skipped"] = desired["skipped"]
            for message in desired["skipped"]:
                module.warn(message)
        else:
            plan = plan_absent(routes, retire)
    except (PeersError, KernelError, ValueError) as e:
        module.fail_json(msg=str(e), **result)

    result["changed"] = plan.changed
    result["actions"] = plan.actions
    if module._diff:
        after = render_desired(desired) if desired is not None else ""
        before = render_current(routes, link, dev_addrs, neigh, fdb)
        before = "".join(f"vxlan {d['name']} (old, ours)\n" for d in retire) + before
        result["diff"] = dict(before=before, after=after,
                              before_header=f"routing ({dev})", after_header=f"routing ({dev})")

    if not module.check_mode:
        if p["state"] == "present":
            final = {"device": dev if desired["device"] else None, "peers": record_peers(peers)}
            # Recorded before the kernel changes: a device about to be made is already ours by
            # record, and an old one stays recorded until it is gone.
            intent = dict(final)
            if retire or (link is not None and link["ours"] and not desired["device"]):
                intent["retired"] = sorted({d["name"] for d in retire}
                                           | ({dev} if link is not None and link["ours"] else set()))
            if plan.changed and record != intent:
                save_record(module, state_file, intent, result)
        try:
            kernel.apply(plan)
        except KernelError as e:
            module.fail_json(msg=str(e), **result)
        if p["state"] == "present":
            if flatnet_state.load_or_fail(module, state_file) != final:
                save_record(module, state_file, final, result)
        else:
            flatnet_state.remove(state_file)
    module.exit_json(**result)


def save_record(module, path, record, result):
    try:
        flatnet_state.save(path, record)
    except OSError as e:
        module.fail_json(msg=f"cannot write {path}: {e}", **result)


if __name__ == "__main__":
    main()
