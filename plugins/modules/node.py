#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors

from __future__ import annotations

DOCUMENTATION = r"""
---
module: node
short_description: The node side of the flat pod network (bridge, gateway addresses, sysctls)
version_added: 0.1.0
description:
  - Makes the node bridge (ifalias C(flatnet)) with exactly the gateway addresses
    O(addresses) as its global addresses, the MTU O(mtu), up, and C(accept_ra=0) when it has
    an IPv6 address. The MTU is set explicitly, since a bridge otherwise follows its smallest port.
  - Gives the bridge a fixed MAC derived from its name and lowest gateway address (locally
    administered), since a bridge otherwise takes its lowest port's MAC, which changes as pods
    come and go; M(flatnet.cluster.pods) points the pods' static neighbour entries for the
    gateway at it.
  - Sets C(net.ipv4.ip_forward=1), C(net.ipv6.conf.all.forwarding=1) when O(ipv6), and
    C(net.ipv4.conf.all.rp_filter=2) (loose) when it is V(1) (strict drops asymmetric pod
    traffic). Raises the neighbour table limits C(net.ipv4.neigh.default.gc_thresh1/2/3) (and
    IPv6's) to 8192/32768/65536 where they are lower, since every pod's neighbour entries count
    against one table per kernel. The original values are recorded in
    C(/var/lib/flatnet/node.json) on first change.
  - Records the bridge, its addresses and O(pod_cidrs) in C(node.json); the planner reads the pod
    CIDRs back through M(flatnet.cluster.node_facts).
  - A bridge of that name without the C(flatnet) ifalias is adopted only when it carries no
    address other than O(addresses); otherwise the module fails.
  - O(state=absent) deletes the bridge (only when it carries the C(flatnet) ifalias), restores
    each recorded sysctl that still has the value this module set, and removes C(node.json).
author: flatnet maintainers (@flatnet)
options:
  bridge:
    description: Name of the node bridge.
    type: str
    default: cni0
  addresses:
    description: Gateway addresses of the bridge with prefix, one per family, for example V(10.244.0.1/24).
    type: list
    elements: str
    default: []
  mtu:
    description: MTU of the bridge.
    type: int
    default: 1500
  ipv6:
    description: Enable IPv6 forwarding. Defaults to V(true) when O(addresses) holds an IPv6 address.
    type: bool
  pod_cidrs:
    description: Pod CIDRs of this node, recorded for the planner.
    type: list
    elements: str
    default: []
  state:
    description: V(present) or V(absent).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - flatnet.cluster.state_dir
attributes:
  check_mode:
    support: full
    description: Reports what would change; changes nothing.
  diff_mode:
    support: full
    description: Before and after text of the bridge and the sysctls.
"""

EXAMPLES = r"""
- name: Node bridge and forwarding
  flatnet.cluster.node:
    bridge: cni0
    addresses: [10.244.0.1/24]
    mtu: 1450
    pod_cidrs: [10.244.0.0/24]

- name: Undo it
  flatnet.cluster.node:
    bridge: cni0
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or would be done in check mode), one line each.
  returned: always
  type: list
  elements: str
  sample: ["add bridge cni0", "cni0: add address 10.244.0.1/24", "set net.ipv4.ip_forward=1 (was 0)"]
sysctls:
  description: The sysctls this module manages and their values after the run.
  returned: always
  type: dict
  sample: {net.ipv4.ip_forward: "1"}
diff:
  description: Before and after text (with C(--diff)).
  returned: when diff mode is on
  type: dict
"""

import ipaddress
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import state as state_file
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import (
    ALIAS,
    IPError,
    IPRoute2,
    bridge_mac,
    global_addrs,
    is_up,
    read_sysctl,
    write_sysctl,
)


class NodeError(Exception):
    pass


def normalise_addresses(addresses):
    result = []
    for addr in addresses or []:
        if "/" not in str(addr):
            raise NodeError(f"gateway address {addr} has no prefix length (for example {addr}/24)")
        try:
            result.append(str(ipaddress.ip_interface(str(addr))))
        except ValueError as exc:
            raise NodeError(str(exc)) from None
    return result


# Every pod and the bridge keep neighbour entries, all counted in one kernel table; the
# default limit (gc_thresh3 = 1024) overflows with a few hundred pods and pod traffic then
# fails. Raised, never lowered; these sysctls only exist in a host's initial namespace.
NEIGH_THRESH = {"gc_thresh1": 8192, "gc_thresh2": 32768, "gc_thresh3": 65536}


def wanted_sysctls(ipv6, current):
    """Sysctl name -> value wanted, given the current values (``rp_filter`` only from 1)."""
    want = {"net.ipv4.ip_forward": "1"}
    if ipv6:
        want["net.ipv6.conf.all.forwarding"] = "1"
    if current.get("net.ipv4.conf.all.rp_filter") == "1":
        want["net.ipv4.conf.all.rp_filter"] = "2"
    for family in ("ipv4", "ipv6") if ipv6 else ("ipv4",):
        for key, value in NEIGH_THRESH.items():
            name = f"net.{family}.neigh.default.{key}"
            now = current.get(name)
            if now is not None and now.isdigit() and int(now) < value:
                want[name] = str(value)
    return want


def plan_present(bridge, addresses, mtu, link, link_addrs, accept_ra, sysctls_now, want_sysctls):
    """Pure: what to change. ``link`` is the ``ip -details`` entry of the bridge (or None),
    ``link_addrs`` its global addresses, ``accept_ra`` its current value (str or None).
    Returns (batch lines, sysctl writes {name: value}, actions)."""
    lines, writes, actions = [], {}, []
    v6 = any(ipaddress.ip_interface(a).version == 6 for a in addresses)
    mac = bridge_mac(bridge, addresses)

    def add_addr(addr):
        extra = ["nodad"] if ipaddress.ip_interface(addr).version == 6 else []
        lines.append(["addr", "add", addr, "dev", bridge] + extra)
        actions.append(f"{bridge}: add address {addr}")

    if link is None:
        actions.append(f"add bridge {bridge} mtu {mtu}")
        lines.append(["link", "add", bridge] + (["address", mac] if mac else [])
                     + ["mtu", mtu, "type", "bridge"])
        lines.append(["link", "set", bridge, "alias", ALIAS])
        for addr in addresses:
            add_addr(addr)
        lines.append(["link", "set", bridge, "up"])
        if v6:
            writes[f"net.ipv6.conf.{bridge}.accept_ra"] = "0"
    else:
        kind = (link.get("linkinfo") or {}).get("info_kind")
        if kind != "bridge":
            raise NodeError(f"{bridge} exists and is not a bridge ({kind or 'no kind'}): "
                            f"delete it or set flatnet_bridge to another name")
        if link.get("ifalias") != ALIAS:
            foreign = [a for a in link_addrs if a not in addresses]
            if foreign:
                raise NodeError(
                    f"bridge {bridge} already has an IP address different from "
                    f"{', '.join(addresses) or 'none'} ({', '.join(foreign)}) and was not made by "
                    f"flatnet.cluster (no ifalias '{ALIAS}'): tear it down or set flatnet_bridge "
                    f"to another name"
                )
            lines.append(["link", "set", bridge, "alias", ALIAS])
            actions.append(f"adopt bridge {bridge} (set ifalias {ALIAS})")
        if mac and link.get("address") != mac:
            lines.append(["link", "set", bridge, "address", mac])
            actions.append(f"{bridge}: set MAC {mac} (was {link.get('address')})")
        if link.get("mtu") != mtu:
            lines.append(["link", "set", bridge, "mtu", mtu])
            actions.append(f"{bridge}: set mtu {mtu} (was {link.get('mtu')})")
        for addr in link_addrs:
            if addr not in addresses:
                lines.append(["addr", "del", addr, "dev", bridge])
                actions.append(f"{bridge}: remove address {addr}")
        for addr in addresses:
            if addr not in link_addrs:
                add_addr(addr)
        if not is_up(link):
            lines.append(["link", "set", bridge, "up"])
            actions.append(f"{bridge}: set up")
        if v6 and accept_ra not in (None, "0"):
            writes[f"net.ipv6.conf.{bridge}.accept_ra"] = "0"
    for name, value in want_sysctls.items():
        if sysctls_now.get(name) != value:
            writes[name] = value
    for name, value in writes.items():
        if name in want_sysctls:
            actions.append(f"set {name}={value} (was {sysctls_now.get(name)})")
        elif link is not None:
            actions.append(f"set {name}={value}")
    return lines, writes, actions


def record_sysctls(record, writes, sysctls_now, want_sysctls):
    """Record the original value of each managed sysctl the first time it is changed."""
    recorded = dict(record.get("sysctls", {}))
    for name in want_sysctls:
        if name in writes and name not in recorded:
            recorded[name] = {"original": sysctls_now.get(name), "value": writes[name]}
    return recorded


def plan_restore(record, sysctls_now):
    """Pure: sysctls to put back on absent: only those still holding the value we set."""
    writes = {}
    for name, rec in (record.get("sysctls") or {}).items():
        if rec.get("original") is not None and sysctls_now.get(name) == rec.get("value"):
            writes[name] = rec["original"]
    return writes


MANAGED = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter") + tuple(
    f"net.{family}.neigh.default.{key}" for family in ("ipv4", "ipv6") for key in NEIGH_THRESH
)


def describe(bridge, link, addrs, mtu_up, sysctls):
    lines = []
    if link is None:
        lines.append(f"bridge {bridge}: absent")
    else:
        lines.append(f"bridge {bridge}: addresses {','.join(sorted(addrs)) or '-'}; {mtu_up}")
    for name in sorted(sysctls):
        lines.append(f"{name} = {sysctls[name]}")
    return "\n".join(lines) + "\n"


def apply(module, ip, lines, writes, actions):
    """Run the bridge changes in one ``ip -batch``, then write the sysctls."""
    try:
        ip.batch(lines)
        for name, value in writes.items():
            write_sysctl(name, value)
    except (IPError, OSError) as exc:
        module.fail_json(msg=str(exc), actions=actions)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bridge=dict(type="str", default="cni0"),
            addresses=dict(type="list", elements="str", default=[]),
            mtu=dict(type="int", default=1500),
            ipv6=dict(type="bool"),
            pod_cidrs=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=state_file.state_dir_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    bridge = p["bridge"]
    node_path = os.path.join(p["state_dir"], "node.json")
    ip = IPRoute2(module)
    record = state_file.load(node_path)
    try:
        addresses = normalise_addresses(p["addresses"])
        links = ip.links()
        link = links.get(bridge)
        addrs = global_addrs(ip.json(["addr", "show", "dev", bridge])[0]) if link else []
    except (NodeError, IPError) as exc:
        module.fail_json(msg=str(exc))
    ipv6 = p["ipv6"] if p["ipv6"] is not None else any(
        ipaddress.ip_interface(a).version == 6 for a in addresses)
    sysctls_now = {name: read_sysctl(name) for name in MANAGED}
    before_text = describe(bridge, link, addrs,
                           f"mac {link.get('address')}; mtu {link.get('mtu')}; "
                           f"{'up' if is_up(link) else 'down'}" if link else "",
                           {k: v for k, v in sysctls_now.items() if v is not None})

    if p["state"] == "absent":
        lines, actions = [], []
        if link is not None and link.get("ifalias") == ALIAS:
            lines.append(["link", "del", bridge])
            actions.append(f"delete bridge {bridge}")
        writes = plan_restore(record, sysctls_now)
        actions += [f"restore {n}={v}" for n, v in sorted(writes.items())]
        if os.path.exists(node_path):
            actions.append(f"remove {node_path}")
        after = dict(sysctls_now, **writes)
        after_text = describe(bridge, None if lines else link, addrs, "", {
            k: v for k, v in after.items() if v is not None})
        result = dict(changed=bool(actions), actions=actions,
                      sysctls={k: v for k, v in after.items() if v is not None})
        if module._diff:
            result["diff"] = {"before": before_text, "after": after_text}
        if module.check_mode or not actions:
            module.exit_json(**result)
        apply(module, ip, lines, writes, actions)
        state_file.remove(node_path)
        state_file.remove_dir_if_empty(p["state_dir"])
        module.exit_json(**result)

    want_sysctls = wanted_sysctls(ipv6, sysctls_now)
    accept_ra = read_sysctl(f"net.ipv6.conf.{bridge}.accept_ra") if link else None
    try:
        lines, writes, actions = plan_present(bridge, addresses, p["mtu"], link, addrs, accept_ra,
                                              sysctls_now, want_sysctls)
    except NodeError as exc:
        module.fail_json(msg=str(exc))
    if not os.path.isdir("/proc/sys/net/ipv6"):
        writes = {k: v for k, v in writes.items() if not k.startswith("net.ipv6.")}
    new_record = {
        "bridge": bridge,
        "addresses": addresses,
        "mtu": p["mtu"],
        "pod_cidrs": list(p["pod_cidrs"]),
        "sysctls": record_sysctls(record, writes, sysctls_now, want_sysctls),
    }
    if new_record != record:
        actions.append(f"record {node_path}")
    after = dict(sysctls_now, **{k: v for k, v in writes.items() if k in MANAGED})
    result = dict(changed=bool(actions), actions=actions,
                  sysctls={k: v for k, v in after.items() if v is not None})
    if module._diff:
        result["diff"] = {"before": before_text, "after": describe(
            bridge, True, addresses, f"mac {bridge_mac(bridge, addresses)}; mtu {p['mtu']}; up",
            result["sysctls"])}
    if module.check_mode or not actions:
        module.exit_json(**result)
    apply(module, ip, lines, writes, actions)
    state_file.save(node_path, new_record)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
