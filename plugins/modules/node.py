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
    against one table per kernel.
  - With O(ipv6), an O(underlay_interface) that takes router advertisements (C(accept_ra=1))
    gets C(accept_ra=2) before forwarding is turned on, since a forwarding host ignores them
    at C(accept_ra=1) and would lose its SLAAC addresses and default route.
  - The original value of every sysctl it changes is recorded in C(node.json) (under
    O(state_dir)) B(before) the sysctl is written, so an interrupted run never loses it and a
    rerun never takes the collection's own value for the original.
  - Ownership is by record. C(node.json) names the bridge the collection made (or adopted).
    A bridge of that name that is neither recorded nor marked with the C(flatnet) ifalias is
    refused before any change, unless O(adopt) is set. An adopted bridge keeps its ifalias;
    its original MAC, MTU, addresses, up state and C(accept_ra) are recorded and put back by
    O(state=absent) instead of deleting it. Adopting a bridge that carries addresses other
    than O(addresses) is refused (they would be taken from whatever uses them).
  - When O(bridge) changes, the recorded old bridge is deleted if it still carries the
    C(flatnet) ifalias (its gateway addresses and their routes go with it), or restored if it
    was adopted, in the same C(ip -batch) that makes the new one.
  - Records the bridge, its addresses and O(pod_cidrs) in C(node.json); the planner reads the pod
    CIDRs back through M(flatnet.cluster.node_facts). A C(node.json) that is not a JSON object
    fails the task, naming the file, before any change.
  - O(state=absent) deletes the recorded bridges that carry the C(flatnet) ifalias (a marked
    bridge without a record is left with a warning), restores adopted ones, restores each
    recorded sysctl that still has the value this module set, and removes C(node.json).
author: flatnet maintainers (@flatnet)
options:
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
  adopt:
    description:
      - Use an existing bridge of that name that the collection did not make.
      - Its original MAC, MTU, addresses, up state and C(accept_ra) are recorded first, and
        O(state=absent) restores them instead of deleting the bridge.
    type: bool
    default: false
  underlay_interface:
    description:
      - The node's underlay interface. With O(ipv6), if it has C(accept_ra=1), it is set to
        V(2) before forwarding is enabled, and restored by O(state=absent).
    type: str
  pod_cidrs:
    description: Pod CIDRs of this node, recorded for the planner.
    type: list
    elements: str
    default: []
  state:
    description: V(present) or V(absent).
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.state
  - flatnet.cluster.bridge
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Reports what would change; changes nothing.
  diff_mode:
    description: Before and after text of the bridges and the sysctls.
"""

EXAMPLES = r"""
- name: Node bridge and forwarding
  flatnet.cluster.node:
    bridge: cni0
    addresses: [10.244.0.1/24]
    mtu: 1450
    pod_cidrs: [10.244.0.0/24]
    underlay_interface: eth0

- name: Use an existing bridge br-pods (teardown restores it)
  flatnet.cluster.node:
    bridge: br-pods
    adopt: true
    addresses: [10.244.0.1/24]

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

from ansible_collections.flatnet.cluster.plugins.module_utils import reconcile
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import (
    global_addrs,
    IPRoute2,
    is_up,
    read_sysctl,
)
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError
from ansible_collections.flatnet.cluster.plugins.module_utils.names import ALIAS, bridge_mac


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

FORWARDING6 = "net.ipv6.conf.all.forwarding"


def accept_ra_name(interface):
    return f"net.ipv6.conf.{interface}.accept_ra"


def wanted_sysctls(ipv6, current):
    """Sysctl name -> value wanted, given the current values (``rp_filter`` only from 1)."""
    want = {"net.ipv4.ip_forward": "1"}
    if ipv6:
        want[FORWARDING6] = "1"
    if current.get("net.ipv4.conf.all.rp_filter") == "1":
        want["net.ipv4.conf.all.rp_filter"] = "2"
    for family in ("ipv4", "ipv6") if ipv6 else ("ipv4",):
        for key, value in NEIGH_THRESH.items():
            name = f"net.{family}.neigh.default.{key}"
            now = current.get(name)
            if now is not None and now.isdigit() and int(now) < value:
                want[name] = str(value)
    return want


def underlay_ra_sysctls(ipv6, underlay, current, recorded):
    """``{accept_ra sysctl: "2"}`` for an underlay that uses router advertisements, else {}.

    A host with IPv6 forwarding on ignores RAs at ``accept_ra=1``; at 2 it keeps taking them.
    The underlay "used" them when it had ``accept_ra=1`` while forwarding was still off (the
    original forwarding value, if this module changed it). Once recorded, 2 stays wanted, so
    drift is repaired and a rerun is unchanged."""
    if not ipv6 or not underlay:
        return {}
    name = accept_ra_name(underlay)
    if current.get(name) is None:
        return {}
    if name in recorded:
        return {name: "2"}
    fwd = recorded.get(FORWARDING6, {}).get("original", current.get(FORWARDING6))
    if current.get(name) == "1" and fwd != "1":
        return {name: "2"}
    return {}


def foreign_bridge_error(bridge, link_addrs, addresses, node_path):
    foreign = [a for a in link_addrs if a not in addresses]
    detail = (f"; it already has an IP address different from {', '.join(addresses) or 'none'} "
              f"({', '.join(foreign)})" if foreign else "")
    return NodeError(
        f"bridge {bridge} exists and was not made by flatnet.cluster (not recorded in "
        f"{node_path}, no ifalias '{ALIAS}'){detail}; nothing was changed. Set flatnet_bridge "
        f"to another name, or set flatnet_bridge_adopt: true to use this bridge (teardown then "
        f"restores its MAC, MTU and addresses instead of deleting it)"
    )


def ownership(bridge, link, link_addrs, addresses, record, adopt, node_path, accept_ra):
    """Pure: whose is the bridge ``bridge``? Returns ``(mark, adopted)``: ``mark`` when the
    module sets the C(flatnet) ifalias on it (it made it), ``adopted`` the recorded originals
    of an adopted bridge (or None). Raises NodeError for a bridge it must not touch."""
    if link is None:
        return True, None
    kind = (link.get("linkinfo") or {}).get("info_kind")
    if kind != "bridge":
        raise NodeError(f"{bridge} exists and is not a bridge ({kind or 'no kind'}): "
                        f"delete it or set flatnet_bridge to another name")
    if record.get("bridge") == bridge and record.get("adopted"):
        return False, record["adopted"]
    for old in record.get("retired") or []:
        if old.get("bridge") == bridge and old.get("adopted"):
            return False, old["adopted"]
    if record.get("bridge") == bridge:
        return True, None  # recorded as made by this module: manage it (and re-mark it)
    if link.get("ifalias") == ALIAS:
        # Only this module sets the marker: a marked bridge under the configured name is one
        # it made, even when its record was lost (moved away after corruption).
        return True, None
    if not adopt:
        raise foreign_bridge_error(bridge, link_addrs, addresses, node_path)
    foreign = [a for a in link_addrs if a not in addresses]
    if foreign:
        raise NodeError(
            f"bridge {bridge} cannot be adopted: it carries addresses other than the gateway "
            f"addresses ({', '.join(foreign)}), which would be taken from whatever uses them; "
            f"remove them first or set flatnet_bridge to another name")
    return False, {"mac": link.get("address"), "mtu": link.get("mtu"),
                   "addresses": sorted(link_addrs), "up": is_up(link), "accept_ra": accept_ra}


def plan_present(bridge, addresses, mtu, link, link_addrs, accept_ra, sysctls_now, want_sysctls,
                 mark=True, adopting=None, retire=()):
    """Pure: the ``reconcile.Plan`` that makes the bridge. ``link`` is the ``ip -details``
    entry of the bridge (or None), ``link_addrs`` its global addresses, ``accept_ra`` its
    current value (str or None). ``mark``: set the ``flatnet`` ifalias (False for an adopted
    bridge); ``adopting``: the originals of a bridge adopted by this run (said first).
    ``retire``: the old bridges to undo first, in the same batch, so the gateway addresses
    are free for the new one (see :func:`retire_all`).

    One ``ip`` batch; the sysctl writes keep the order of ``want_sysctls`` (an underlay's
    accept_ra comes before forwarding), after the old bridges' and before the bridge's own."""
    plan = retire_all(retire)
    lines, actions, writes = plan.batches[0].lines, plan.actions, {}
    v6 = any(ipaddress.ip_interface(a).version == 6 for a in addresses)
    mac = bridge_mac(bridge, addresses)
    if adopting:
        actions.append(f"adopt bridge {bridge} (record its MAC {adopting['mac']}, mtu "
                       f"{adopting['mtu']}, addresses {','.join(adopting['addresses']) or '-'})")
    bridge_writes = {}
    if link is None:
        actions.append(f"add bridge {bridge} mtu {mtu}")
        lines.append(["link", "add", bridge] + (["address", mac] if mac else [])
                     + ["mtu", mtu, "type", "bridge"])
        lines.append(["link", "set", bridge, "alias", ALIAS])
        lines += reconcile.addr_lines([], addresses, bridge)
        actions += [f"{bridge}: add address {a}" for a in addresses]
        lines.append(["link", "set", bridge, "up"])
        if v6:
            bridge_writes[accept_ra_name(bridge)] = "0"
    else:
        kind = (link.get("linkinfo") or {}).get("info_kind")
        if kind != "bridge":
            raise NodeError(f"{bridge} exists and is not a bridge ({kind or 'no kind'}): "
                            f"delete it or set flatnet_bridge to another name")
        if mark and link.get("ifalias") != ALIAS:
            lines.append(["link", "set", bridge, "alias", ALIAS])
            actions.append(f"{bridge}: set ifalias {ALIAS}")
        if mac and link.get("address") != mac:
            lines.append(["link", "set", bridge, "address", mac])
            actions.append(f"{bridge}: set MAC {mac} (was {link.get('address')})")
        if link.get("mtu") != mtu:
            lines.append(["link", "set", bridge, "mtu", mtu])
            actions.append(f"{bridge}: set mtu {mtu} (was {link.get('mtu')})")
        gone, new = reconcile.addr_diff(link_addrs, addresses)
        lines += reconcile.addr_lines(link_addrs, addresses, bridge)
        actions += [f"{bridge}: remove address {a}" for a in gone]
        actions += [f"{bridge}: add address {a}" for a in new]
        if not is_up(link):
            lines.append(["link", "set", bridge, "up"])
            actions.append(f"{bridge}: set up")
        if v6 and accept_ra not in (None, "0"):
            bridge_writes[accept_ra_name(bridge)] = "0"
            actions.append(f"set {accept_ra_name(bridge)}=0")
    for name, value in want_sysctls.items():
        if sysctls_now.get(name) != value:
            writes[name] = value
            actions.append(f"set {name}={value} (was {sysctls_now.get(name)})")
    # The bridge's own accept_ra last: a new bridge has no sysctl directory before the batch.
    writes.update(bridge_writes)
    plan.sysctl = list(dict(plan.sysctl, **writes).items())
    return plan


def plan_retire(old, link, link_addrs, accept_ra):
    """Pure: the ``reconcile.Plan`` (one ``ip`` batch) that undoes an old bridge
    (``{"bridge", "adopted"}`` from the record): delete one this module made (only while it
    carries the marker), put an adopted one back as it was."""
    plan = reconcile.Plan()
    lines, actions = plan.batch("ip"), plan.actions
    name = old["bridge"]
    if link is None:
        return plan
    adopted = old.get("adopted")
    if not adopted:
        if link.get("ifalias") != ALIAS:
            plan.warnings.append(f"bridge {name} is recorded but no longer carries ifalias "
                                 f"'{ALIAS}'; left in place (delete it by hand if it is unused)")
        else:
            lines.append(["link", "del", name])
            actions.append(f"delete bridge {name}")
        return plan
    original = sorted(set(adopted.get("addresses") or []))
    gone, new = reconcile.addr_diff(link_addrs, original)
    lines += reconcile.addr_lines(link_addrs, original, name)
    actions += [f"{name}: remove address {a}" for a in gone]
    actions += [f"{name}: restore address {a}" for a in new]
    if adopted.get("mac") and link.get("address") != adopted["mac"]:
        lines.append(["link", "set", name, "address", adopted["mac"]])
        actions.append(f"{name}: restore MAC {adopted['mac']}")
    if adopted.get("mtu") and link.get("mtu") != adopted["mtu"]:
        lines.append(["link", "set", name, "mtu", adopted["mtu"]])
        actions.append(f"{name}: restore mtu {adopted['mtu']}")
    if not adopted.get("up", True) and is_up(link):
        lines.append(["link", "set", name, "down"])
        actions.append(f"{name}: set down (as it was)")
    elif adopted.get("up") and not is_up(link):
        lines.append(["link", "set", name, "up"])
        actions.append(f"{name}: set up (as it was)")
    if adopted.get("accept_ra") is not None and accept_ra not in (None, adopted["accept_ra"]):
        plan.sysctl.append((accept_ra_name(name), adopted["accept_ra"]))
        actions.append(f"restore {accept_ra_name(name)}={adopted['accept_ra']}")
    return plan


def retire_all(olds):
    """Pure: one ``reconcile.Plan`` (one ``ip`` batch) that undoes every old bridge, in
    order. ``olds``: ``[(record entry, link or None, global addresses, accept_ra)]``."""
    plan = reconcile.Plan()
    lines = plan.batch("ip")
    for old in olds:
        step = plan_retire(*old)
        lines += step.batches[0].lines
        plan.sysctl += step.sysctl
        plan.actions += step.actions
        plan.warnings += step.warnings
    return plan


def old_bridges(record, keep=None):
    """The recorded bridges other than ``keep``: the record's own and any left from an
    interrupted rename (``retired``), one entry per name."""
    olds = {}
    if record.get("bridge"):
        olds[record["bridge"]] = {"bridge": record["bridge"], "adopted": record.get("adopted")}
    for old in record.get("retired") or []:
        if old.get("bridge"):
            olds.setdefault(old["bridge"], {"bridge": old["bridge"], "adopted": old.get("adopted")})
    return [olds[n] for n in sorted(olds) if n != keep]


def record_sysctls(record, writes, sysctls_now, want_sysctls):
    """Record the original value of each managed sysctl the first time it is changed.

    Called before the sysctls are written (the record is the intent): a name already recorded
    keeps its first original, so a rerun never records the collection's own value."""
    recorded = dict(record.get("sysctls", {}))
    for name in want_sysctls:
        if name in writes and name not in recorded:
            recorded[name] = {"original": sysctls_now.get(name), "value": writes[name]}
    return recorded


def plan_restore(record, sysctls_now):
    """Pure: sysctls to put back on absent: only those still holding the value we set.
    Forwarding goes back before an interface's accept_ra (the reverse of the present order)."""
    writes = {}
    items = sorted((record.get("sysctls") or {}).items(), key=lambda kv: (kv[0].endswith(".accept_ra"), kv[0]))
    for name, rec in items:
        if rec.get("original") is not None and sysctls_now.get(name) == rec.get("value"):
            writes[name] = rec["original"]
    return writes


def plan_absent(bridge, link, record, olds, sysctls_now, node_path, recorded):
    """Pure: the ``reconcile.Plan`` of state=absent: undo the recorded bridges ``olds`` (as
    :func:`retire_all` takes them), restore the recorded sysctls, remove the record (when
    ``recorded``: the file exists). ``link``: the configured bridge; marked without a record,
    it is not ours to delete (a warning)."""
    plan = retire_all(olds)
    if link is not None and link.get("ifalias") == ALIAS and bridge not in {o[0]["bridge"] for o in olds}:
        plan.warnings.append(f"bridge {bridge} carries ifalias '{ALIAS}' but is not recorded in "
                             f"{node_path}; left in place (run the deploy once to record it, or "
                             f"delete it by hand)")
    writes = plan_restore(record, sysctls_now)
    plan.actions += [f"restore {n}={v}" for n, v in writes.items()]
    # Forwarding and the underlay first, then the adopted bridges' own accept_ra.
    plan.sysctl = list(dict(writes, **dict(plan.sysctl)).items())
    if recorded:
        plan.actions.append(f"remove {node_path}")
    return plan


MANAGED = ("net.ipv4.ip_forward", FORWARDING6, "net.ipv4.conf.all.rp_filter") + tuple(
    f"net.{family}.neigh.default.{key}" for family in ("ipv4", "ipv6") for key in NEIGH_THRESH
)


def describe(bridges, sysctls):
    """``bridges``: [(name, link or None, addrs)]."""
    lines = []
    for name, link, addrs in bridges:
        if link is None:
            lines.append(f"bridge {name}: absent")
        else:
            lines.append(f"bridge {name}: addresses {','.join(sorted(addrs)) or '-'}; "
                         f"mac {link.get('address')}; mtu {link.get('mtu')}; "
                         f"{'up' if is_up(link) else 'down'}")
    for name in sorted(sysctls):
        lines.append(f"{name} = {sysctls[name]}")
    return "\n".join(lines) + "\n"


def report(plan, sysctls_now, olds, bridge=None, diff=False):
    """What the module returns for ``plan``: changed, actions, the managed sysctls after it
    and, with ``diff``, the before and after text. ``olds`` as :func:`retire_all` takes them
    (one the plan deletes shows absent after); ``bridge``: the configured bridge on present,
    ``(name, link, addrs, link after, addrs after)``."""
    after = dict(sysctls_now, **dict(plan.sysctl))
    result = dict(changed=plan.changed, actions=plan.actions,
                  sysctls={k: v for k, v in after.items() if v is not None and k in sysctls_now})
    if diff:
        lines = [line for step in plan.batches for line in step.lines]
        shown = [(old["bridge"], link, addrs) for old, link, addrs, _ra in olds if link is not None]
        before = shown + ([bridge[:3]] if bridge else [])
        after = [(n, None if ["link", "del", n] in lines else lk, a) for n, lk, a in shown] + (
            [(bridge[0],) + tuple(bridge[3:])] if bridge else [])
        result["diff"] = {
            "before": describe(before, {k: v for k, v in sysctls_now.items() if v is not None}),
            "after": describe(after, result["sysctls"])}
    return result


def save_record(path, record):
    try:
        flatnet_state.save(path, record)
    except OSError as exc:
        raise NodeError(f"cannot write {path}: {exc}") from None


class Reader:
    """The kernel state the module needs, read once."""

    def __init__(self, ip):
        self.ip = ip
        self.links = ip.links()
        self._addrs = None

    def addrs(self, name):
        if name not in self.links:
            return []
        if self._addrs is None:
            self._addrs = {link["ifname"]: global_addrs(link) for link in self.ip.json(["addr", "show"])}
        return self._addrs.get(name, [])

    def bridge(self, name):
        """``(link or None, global addresses, accept_ra or None)`` of the bridge ``name``."""
        link = self.links.get(name)
        return link, self.addrs(name), read_sysctl(accept_ra_name(name)) if link else None

    def olds(self, olds):
        """The recorded old bridges as :func:`retire_all` takes them."""
        return [(old,) + self.bridge(old["bridge"]) for old in olds]


def plan_node(p, reader, record, addresses, sysctls_now, node_path):
    """state=present: ``(plan, intent, new record, olds, bridge)``: the intent is recorded
    before the plan is applied, the new record after it; ``olds`` and ``bridge`` are what
    :func:`report` shows. Raises NodeError."""
    bridge = p["bridge"]
    recorded_sysctls = record.get("sysctls") or {}
    link, addrs, accept_ra = reader.bridge(bridge)
    ipv6 = p["ipv6"] if p["ipv6"] is not None else any(
        ipaddress.ip_interface(a).version == 6 for a in addresses)
    mark, adopted = ownership(bridge, link, addrs, addresses, record, p["adopt"], node_path,
                              accept_ra)
    # Underlay accept_ra first: RAs must stay accepted from the moment forwarding is on.
    want_sysctls = underlay_ra_sysctls(ipv6, p["underlay_interface"], sysctls_now,
                                       recorded_sysctls)
    want_sysctls.update(wanted_sysctls(ipv6, sysctls_now))
    # The recorded old bridges (a renamed flatnet_bridge) go first, in the same batch, so the
    # gateway addresses are free for the new one.
    olds = reader.olds(old_bridges(record, keep=bridge))
    adopting = adopted if adopted and link is not None and record.get("bridge") != bridge else None
    plan = plan_present(bridge, addresses, p["mtu"], link, addrs, accept_ra, sysctls_now,
                        want_sysctls, mark=mark, adopting=adopting, retire=olds)
    if not os.path.isdir("/proc/sys/net/ipv6"):
        plan.sysctl = [(k, v) for k, v in plan.sysctl if not k.startswith("net.ipv6.")]
    new_record = {
        "bridge": bridge,
        "adopted": adopted,
        "addresses": addresses,
        "mtu": p["mtu"],
        "pod_cidrs": list(p["pod_cidrs"]),
        "sysctls": record_sysctls(record, dict(plan.sysctl), sysctls_now, want_sysctls),
    }
    # What this run will change, recorded before it is changed: the sysctls' originals, an
    # adopted bridge's originals, and the old bridges still to undo.
    intent = dict(new_record, retired=[old for old, lk, _a, _r in olds if lk is not None])
    if not intent["retired"]:
        del intent["retired"]
    if new_record != record:
        plan.actions.append(f"record {node_path}")
    new_link = {"address": bridge_mac(bridge, addresses) or (link or {}).get("address"),
                "mtu": p["mtu"], "flags": ["UP"]}
    return plan, intent, new_record, olds, (bridge, link, addrs, new_link, addresses)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bridge=dict(type="str", default="cni0"),
            addresses=dict(type="list", elements="str", default=[]),
            mtu=dict(type="int", default=1500),
            ipv6=dict(type="bool"),
            adopt=dict(type="bool", default=False),
            underlay_interface=dict(type="str"),
            pod_cidrs=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    node_path = os.path.join(p["state_dir"], "node.json")
    try:
        ip = IPRoute2(module)
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    try:
        # A corrupt record fails here, before anything is read or changed.
        record = flatnet_state.load(node_path)
    except flatnet_state.StateError as exc:
        module.fail_json(msg=str(exc))
    try:
        addresses = normalise_addresses(p["addresses"])
        reader = Reader(ip)
        names = list(MANAGED) + [n for n in record.get("sysctls") or {} if n not in MANAGED]
        if p["underlay_interface"]:
            names.append(accept_ra_name(p["underlay_interface"]))
        sysctls_now = {name: read_sysctl(name) for name in dict.fromkeys(names)}
        if p["state"] == "absent":
            olds = reader.olds(old_bridges(record))
            plan = plan_absent(p["bridge"], reader.bridge(p["bridge"])[0], record, olds,
                               sysctls_now, node_path, os.path.exists(node_path))
            intent = new_record = bridge = None
        else:
            plan, intent, new_record, olds, bridge = plan_node(p, reader, record, addresses,
                                                               sysctls_now, node_path)
    except (NodeError, KernelError) as exc:
        module.fail_json(msg=str(exc))
    for warning in plan.warnings:
        module.warn(warning)
    result = report(plan, sysctls_now, olds, bridge, diff=module._diff)
    if module.check_mode or not plan.actions:
        module.exit_json(**result)
    try:
        if intent is not None and intent != record:
            save_record(node_path, intent)
        reconcile.apply(ip.runner, plan)
        if intent != new_record:
            save_record(node_path, new_record)
    except (NodeError, KernelError, OSError) as exc:
        module.fail_json(msg=str(exc), actions=plan.actions)
    if p["state"] == "absent":
        flatnet_state.remove(node_path)
        flatnet_state.remove_dir_if_empty(p["state_dir"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
