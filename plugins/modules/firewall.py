#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: firewall
short_description: Keep the nftables table C(inet flatnet) (masquerade, notrack, VXLAN guard)
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - Writes the whole table C(inet flatnet) in one atomic C(nft -f -) transaction. Nothing else
    in the ruleset is ever read for changing, flushed or deleted.
  - Every base chain of the table is a hook that every packet of the node passes (bridged pod
    traffic too where C(br_netfilter) is loaded), so the table has only chains that change a
    verdict or a packet. What each costs on this machine is measured in docs/performance.md
    section 3 (C(bench/dataplane_bisect.py)).
  - The C(prerouting) and C(output) chains (priority raw, when O(notrack)) exempt pod-to-pod
    traffic (source and destination in the cluster CIDRs) and VXLAN underlay packets from
    connection tracking, since only traffic leaving the cluster is masqueraded. Tracking them
    cost about a tenth of the throughput of a same-node path where C(br_netfilter) is loaded.
  - The C(postrouting) chain (when O(masquerade)) masquerades traffic from the cluster CIDRs to
    destinations outside them (except multicast), never pod-to-pod or node-to-pod. It is what
    makes the kernel run connection tracking on the node at all.
  - The C(input) chain (when O(vxlan_port) is set and O(vxlan_guard)) drops UDP to that port
    from anyone but the cluster nodes' underlay IPs.
  - There is no forward chain (since 0.2.0). It only accepted, under policy accept, and an accept
    ends only its own chain, so it never overrode another table's drop, and it cost every
    forwarded packet a hook.
  - For idempotence and drift detection, after writing, a hash of the live table (C(nft -j), handles
    removed) and of the desired definition are stored in C(firewall.json). When both still
    match, nothing is done; a rule edited by hand or a deleted table is written again.
  - Limitation, reported as a warning and in RV(forward_drop_chains). nftables runs every base
    chain of a hook, and an accept only ends its own chain. A forward chain with policy drop in
    another table (iptables-nft C(ip filter FORWARD) set to DROP by Docker) still drops pod
    traffic, whatever this table accepts. The fix belongs to whoever owns that table, e.g.
    C(iptables -I DOCKER-USER -s CLUSTER_CIDR -j ACCEPT) and the same with C(-d).
options:
  cluster_cidrs:
    description: The cluster CIDRs (one per family). Required with O(state=present).
    type: list
    elements: str
  masquerade:
    description: Masquerade pod traffic that leaves the cluster CIDRs.
    type: bool
    default: true
  vxlan_port:
    description: UDP port of the VXLAN overlay; V(null) when no node uses VXLAN (no input chain).
    type: int
  peer_underlay_ips:
    description: Underlay IPs of the cluster's nodes, the only senders allowed on O(vxlan_port).
    type: list
    elements: str
    default: []
  bridge:
    description:
      - Unused since 0.2.0 (it named the bridge whose traffic the forward chain accepted; that
        chain is gone). Accepted so that existing tasks keep working.
    type: str
  notrack:
    description:
      - Exempt pod-to-pod and VXLAN underlay traffic from connection tracking (the raw
        C(prerouting) and C(output) chains).
      - Only useful when connection tracking runs on the node (O(masquerade), the services
        table C(ip flatnet-svc), or another firewall); without it the chains are a cost with
        no effect. The firewall role sets it to O(masquerade) or services declared.
    type: bool
    default: true
    version_added: 0.2.0
  vxlan_guard:
    description:
      - With O(vxlan_port), drop UDP to that port from anyone but O(peer_underlay_ips) (the
        C(input) chain). V(false) leaves the overlay open to any host of the underlay, which
        must then be trusted (variable C(flatnet_vxlan_guard)).
    type: bool
    default: true
    version_added: 0.2.0
  state:
    description: V(present) writes the table; V(absent) deletes it and C(firewall.json).
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.state
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Reports whether the table would be written, without writing it.
  diff_mode:
    description: Shows C(nft list table inet flatnet) before and the desired definition after.
requirements:
  - nftables (C(nft))
"""

EXAMPLES = r"""
- name: Masquerade, notrack and VXLAN guard for the pod network
  flatnet.cluster.firewall:
    cluster_cidrs: "{{ flatnet_plan.cluster_cidrs }}"
    masquerade: "{{ flatnet_plan.masquerade }}"
    vxlan_port: "{{ flatnet_plan.vxlan.port if flatnet_plan.backend != 'host-gw' else none }}"
    peer_underlay_ips: "{{ flatnet_plan.nodes.values() | map(attribute='underlay.ip') | list }}"

- name: Remove the table
  flatnet.cluster.firewall:
    state: absent
"""

RETURN = r"""
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
  sample: ["write table inet flatnet (table missing)"]
ruleset:
  description: The desired definition of the table (nft syntax).
  returned: when O(state=present)
  type: str
forward_drop_chains:
  description:
    - Base chains on the forward hook in other tables with policy drop (C(family table chain)).
      They drop pod traffic whatever C(inet flatnet) accepts; see the module description.
  returned: always
  type: list
  elements: str
  sample: ["ip filter FORWARD"]
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import firewall_nft, nft_table
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError, Runner
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state

TABLE_ARGS = ["table", firewall_nft.FAMILY, firewall_nft.TABLE]


class Nft:
    """``nft`` through the shared kernel runner."""

    def __init__(self, module):
        self.module = module
        self.runner = Runner(module)
        if not self.runner.bin("nft", required=False):
            raise KernelError("nft was not found: install the nftables package on the node "
                              "(or set flatnet_firewall: false to skip the firewall)")

    def run(self, argv, data=None, check=True):
        return self.runner.run("nft", argv, data=data, check=check)

    def table_json(self):
        """The live table as nft JSON, or None when it does not exist."""
        rc, out, _err = self.run(["-j", "list"] + TABLE_ARGS, check=False)
        if rc != 0:
            return None
        return json.loads(out) if out.strip() else None

    def table_text(self):
        rc, out, _err = self.run(["list"] + TABLE_ARGS, check=False)
        return out if rc == 0 else ""

    def chains_json(self):
        rc, out, _err = self.run(["-j", "list", "chains"], check=False)
        try:
            return json.loads(out) if rc == 0 and out.strip() else {}
        except ValueError:
            return {}


def live_hash(nft):
    table = nft.table_json()
    return None if table is None else nft_table.digest(nft_table.canonical(table))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cluster_cidrs=dict(type="list", elements="str"),
            masquerade=dict(type="bool", default=True),
            vxlan_port=dict(type="int"),
            peer_underlay_ips=dict(type="list", elements="str", default=[]),
            bridge=dict(type="str"),
            notrack=dict(type="bool", default=True),
            vxlan_guard=dict(type="bool", default=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        required_if=[("state", "present", ["cluster_cidrs"])],
        supports_check_mode=True,
    )
    try:
        reconcile(module)
    except KernelError as exc:
        module.fail_json(msg=str(exc))


def reconcile(module):
    """Read the live table, compare hashes, write it in one transaction unless check mode;
    exits the module with the result."""
    p = module.params
    nft = Nft(module)
    state_file = os.path.join(p["state_dir"], "firewall.json")
    record = flatnet_state.load_or_fail(module, state_file)
    result = dict(changed=False, actions=[], forward_drop_chains=[])

    before = nft.table_text() if module._diff else None
    current = live_hash(nft)

    if p["state"] == "absent":
        if current is not None:
            result["actions"].append(f"delete table {firewall_nft.FAMILY} {firewall_nft.TABLE}")
            if not module.check_mode:
                nft.run(["-f", "-"], data=firewall_nft.transaction())
        if not module.check_mode:
            flatnet_state.remove(state_file)
        result["changed"] = bool(result["actions"])
        if module._diff:
            result["diff"] = dict(before=before, after="")
        module.exit_json(**result)

    try:
        definition = firewall_nft.render(p["cluster_cidrs"], p["masquerade"], p["vxlan_port"],
                                         p["peer_underlay_ips"], notrack=p["notrack"],
                                         vxlan_guard=p["vxlan_guard"])
    except ValueError as e:
        module.fail_json(msg=f"invalid firewall input: {e}")
    desired = nft_table.digest(definition)
    result["ruleset"] = definition

    if nft_table.needs_apply(record, desired, current):
        if current is None:
            why = "table missing"
        elif record.get("desired") != desired:
            why = "definition changed" if record else "not recorded"
        else:
            why = "live table differs from the recorded one"
        result["actions"].append(f"write table {firewall_nft.FAMILY} {firewall_nft.TABLE} ({why})")
        if not module.check_mode:
            nft.run(["-f", "-"], data=firewall_nft.transaction(definition))
            flatnet_state.save(state_file, {"desired": desired, "live": live_hash(nft)})
    result["changed"] = bool(result["actions"])

    result["forward_drop_chains"] = firewall_nft.forward_drop_chains(nft.chains_json())
    if result["forward_drop_chains"]:
        module.warn(
            "forward chains with policy drop in other tables will drop pod traffic whatever table "
            f"inet flatnet accepts: {', '.join(result['forward_drop_chains'])}. Accept the cluster "
            "CIDRs there (e.g. iptables -I DOCKER-USER -s CIDR -j ACCEPT and -d CIDR); "
            "flatnet never edits other tables."
        )
    if module._diff:
        result["diff"] = dict(before=before, after=definition,
                              before_header="nft list table inet flatnet", after_header="desired")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
