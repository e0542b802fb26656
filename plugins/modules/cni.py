#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node's CNI configuration, so container runtimes attach containers to the flat network."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cni
short_description: Write the node's CNI configuration for the flat pod network
version_added: 0.2.0
author: flatnet maintainers (@flatnet)
description:
  - Writes C(/etc/cni/net.d/10-flatnet.conflist) (CNI spec C(1.0.0), the newest Debian 12's
    containernetworking-plugins 1.1.1 accept) so that container runtimes (podman, containerd,
    ...) attach containers to the node's bridge with addresses from the node's CNI range,
    and C(/run/flatnet/subnet.env) in flannel's shape.
  - The conflist chains C(bridge) (the node's bridge, C(isGateway), C(ipMasq) false, the
    planned MTU) with C(host-local) IPAM over the CNI ranges and a default route via the
    node's gateway, C(portmap) (capability C(portMappings)) and C(loopback).
  - The file carries a marker key and is recorded in C(cni.json) under O(state_dir); a file
    of that name the collection did not write is never overwritten or removed.
  - V(absent) removes the conflist, C(subnet.env) and the host-local reservations of
    containers that are gone; reservations of containers that still hold an address are
    kept and reported in RV(holding) (stop those containers with their runtime).
  - V(query) changes nothing and reports the plugin directory, the containers holding
    addresses and, with O(run_check), the result of CNI C(CHECK) on every attached container.
options:
  state:
    description: V(present) writes the files, V(absent) removes them, V(query) only reports.
    type: str
    choices: [present, absent, query]
    default: present
  network:
    description: The CNI network name (the conflist's C(name), host-local's directory name).
    type: str
    default: flatnet
  bridge:
    description: The node's bridge. Required with O(state=present).
    type: str
  mtu:
    description: The pod MTU of the plan. Required with O(state=present).
    type: int
  ranges:
    description:
      - host-local range sets, one per family, each a list of ranges with C(subnet),
        C(rangeStart), C(rangeEnd) and C(gateway) (the plan's C(nodes.NODE.cni.ranges)).
      - Required with O(state=present).
    type: list
    elements: list
  cluster_cidrs:
    description: The cluster CIDRs, for C(subnet.env).
    type: list
    elements: str
    default: []
  pod_cidrs:
    description: The node's pod CIDRs, for C(subnet.env).
    type: list
    elements: str
    default: []
  masquerade:
    description: Whether the collection masquerades egress (C(FLANNEL_IPMASQ)).
    type: bool
    default: true
  conf_dir:
    description: Where runtimes look for network configurations.
    type: path
    default: /etc/cni/net.d
  data_dir:
    description: host-local's data directory.
    type: path
    default: /var/lib/cni/networks
  cache_dir:
    description: Where libcni caches the results of ADD (read for CHECK).
    type: path
    default: /var/lib/cni/results
  subnet_env:
    description: Path of the C(subnet.env) file.
    type: path
    default: /run/flatnet/subnet.env
  plugin_dirs:
    description: Directories searched, in order, for the CNI plugins.
    type: list
    elements: path
    default: [/usr/lib/cni, /opt/cni/bin]
  run_check:
    description: With O(state=query), run CNI C(CHECK) on every attached container.
    type: bool
    default: false
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Reports what would be written or removed, without writing.
  diff_mode:
    description: Shows the conflist and C(subnet.env) before and after.
requirements:
  - containernetworking-plugins (C(bridge), C(host-local), C(portmap), C(loopback))
"""

EXAMPLES = r"""
- name: CNI configuration of this node
  flatnet.cluster.cni:
    bridge: cni0
    mtu: "{{ flatnet_plan.mtu }}"
    ranges: "{{ flatnet_plan.nodes[inventory_hostname].cni.ranges }}"
    cluster_cidrs: "{{ flatnet_plan.cluster_cidrs }}"
    pod_cidrs: "{{ flatnet_plan.nodes[inventory_hostname].pod_cidrs }}"

- name: Containers attached to the flat network, checked with CNI CHECK
  flatnet.cluster.cni:
    state: query
    run_check: true
"""

RETURN = r"""
plugin_dir:
  description: The directory holding every plugin the conflist uses, or null.
  returned: always
  type: str
  sample: /usr/lib/cni
missing_plugins:
  description: Per searched directory, the plugins it lacks.
  returned: always
  type: dict
conflist:
  description: Path of the collection's conflist.
  returned: always
  type: str
  sample: /etc/cni/net.d/10-flatnet.conflist
foreign_conflists:
  description: Other network configurations in O(conf_dir) (runtimes pick a network by name).
  returned: always
  type: list
  elements: str
containers:
  description: Attachments holding an address on the network (host-local reservations).
  returned: always
  type: list
  elements: dict
  contains:
    ip:
      description: The reserved address.
      type: str
    container_id:
      description: The runtime's container ID.
      type: str
    ifname:
      description: The interface name inside the container.
      type: str
    netns:
      description: The named network namespace (C(/run/netns)) holding the address, or null when none does (stale).
      type: str
holding:
  description: With O(state=absent), the containers that still hold addresses (their reservations are kept).
  returned: always
  type: list
  elements: str
checks:
  description: With O(run_check), per attached container, whether CNI CHECK passed and what it said.
  returned: always
  type: list
  elements: dict
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import cni_config as C
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import IPRoute2
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError


def netns_addresses(ip):
    """{(ip, ifname): netns name} over the named namespaces of this host."""
    out = {}
    try:
        names = ip.netns_list()
    except KernelError:
        return out
    for name in names:
        try:
            links = ip.json(["addr", "show"], name)
        except KernelError:
            continue  # a namespace that went away meanwhile
        for link in links:
            for a in link.get("addr_info", []):
                out[(a.get("local"), link.get("ifname"))] = name
    return out


def attachments(ip, p):
    """host-local's reservations, each with the namespace that holds its address (or None)."""
    held = C.reservations(p["data_dir"], p["network"])
    found = netns_addresses(ip) if held else {}
    out = []
    for r in held:
        r = dict(r)
        r["netns"] = found.get((r["ip"], r["ifname"]))
        out.append(r)
    return out


def run_check(runner, p, plugin_dir, containers, conflist_doc):
    """CNI CHECK on each live attachment, as a runtime does it (prevResult from libcni's cache)."""
    results = []
    for c in containers:
        if not c["netns"]:
            continue
        entry = {"container_id": c["container_id"], "ip": c["ip"], "netns": c["netns"], "ok": True, "msg": "CHECK passed"}
        cached = C.cached_result(p["cache_dir"], p["network"], c["container_id"], c["ifname"])
        conf = C.cached_config(cached) or conflist_doc
        prev = (cached or {}).get("result")
        if not conf or not isinstance(prev, dict):
            entry.update(ok=False, msg=f"no cached ADD result in {p['cache_dir']} for this attachment (libcni keeps one)")
            results.append(entry)
            continue
        prev = dict(prev, cniVersion=conf.get("cniVersion", C.CNI_VERSION))
        env = {
            "CNI_COMMAND": "CHECK",
            "CNI_CONTAINERID": c["container_id"],
            "CNI_NETNS": os.path.join("/run/netns", c["netns"]),
            "CNI_IFNAME": c["ifname"],
            "CNI_PATH": plugin_dir,
        }
        for plugin in conf.get("plugins", []):
            exe = os.path.join(plugin_dir, plugin.get("type", ""))
            rc, out, err = runner.run(plugin.get("type", ""), [], data=C.check_stdin(conf, plugin, prev).decode(),
                                      check=False, env=env, exe=exe)
            if rc != 0:
                entry.update(ok=False, msg=f"{plugin.get('type')}: {(out or err).strip()}")
                break
        results.append(entry)
    return results


def remove(module, record, record_path, conflist, current, ours, env_current, containers, result):
    """state=absent: the conflist and subnet.env if ours, the reservations no container holds; exits."""
    p = module.params
    diff = {"before": "", "after": ""}
    if ours:
        result["changed"] = True
        diff["before"] += f"# {conflist}\n{current}"
        if not module.check_mode:
            flatnet_state.remove(conflist)
    elif current is not None:
        module.warn(f"{conflist} was not written by flatnet.cluster (no marker or no record): left in place")
    if env_current is not None and record.get("subnet_env") == p["subnet_env"]:
        result["changed"] = True
        diff["before"] += f"# {p['subnet_env']}\n{env_current}"
        if not module.check_mode:
            flatnet_state.remove(p["subnet_env"])
            flatnet_state.remove_dir_if_empty(os.path.dirname(p["subnet_env"]))
    live = [c for c in containers if c["netns"]]
    stale = [c for c in containers if not c["netns"]]
    result["holding"] = [f"{c['container_id'][:12]} ({c['ip']}, netns {c['netns']})" for c in live]
    netdir = os.path.join(p["data_dir"], p["network"])
    if record.get("network") == p["network"] and os.path.isdir(netdir):
        leftovers = [c["file"] for c in stale]
        if not live:
            leftovers += [os.path.join(netdir, f) for f in os.listdir(netdir)
                          if f in C.HOST_LOCAL_FILES or f.startswith(C.HOST_LOCAL_PREFIX)]
        if leftovers or not live:
            result["changed"] = True
            diff["before"] += "".join(f"# reservation {f}\n" for f in sorted(leftovers))
            if not module.check_mode:
                for f in leftovers:
                    flatnet_state.remove(f)
                flatnet_state.remove_dir_if_empty(netdir)
    if live:
        module.warn(
            f"containers still hold addresses on CNI network {p['network']}: {', '.join(result['holding'])}; "
            "their reservations are kept - stop them with their runtime (e.g. podman rm -f)"
        )
    if record and not live and not module.check_mode:
        flatnet_state.remove(record_path)
        result["changed"] = True
    elif record and live and not module.check_mode:
        flatnet_state.save(record_path, {"network": p["network"]})
    result["diff"] = diff
    module.exit_json(**result)


def main():  # noqa: C901 (one decision per file, in order)
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent", "query"], default="present"),
            network=dict(type="str", default="flatnet"),
            bridge=dict(type="str"),
            mtu=dict(type="int"),
            ranges=dict(type="list", elements="list"),
            cluster_cidrs=dict(type="list", elements="str", default=[]),
            pod_cidrs=dict(type="list", elements="str", default=[]),
            masquerade=dict(type="bool", default=True),
            conf_dir=dict(type="path", default=C.CONF_DIR),
            data_dir=dict(type="path", default=C.DATA_DIR),
            cache_dir=dict(type="path", default=C.CACHE_DIR),
            subnet_env=dict(type="path", default=C.SUBNET_ENV),
            plugin_dirs=dict(type="list", elements="path", default=list(C.PLUGIN_DIRS)),
            run_check=dict(type="bool", default=False),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        required_if=[("state", "present", ("bridge", "mtu", "ranges"))],
        supports_check_mode=True,
    )
    p = module.params
    record_path = os.path.join(p["state_dir"], "cni.json")
    record = flatnet_state.load_or_fail(module, record_path)
    conflist = os.path.join(p["conf_dir"], C.CONFLIST_NAME)
    plugin_dir, missing = C.find_plugin_dir(p["plugin_dirs"])
    try:
        others = sorted(f for f in os.listdir(p["conf_dir"])
                        if f != C.CONFLIST_NAME and f.endswith((".conflist", ".conf", ".json")))
    except OSError:
        others = []
    current = flatnet_state.read_text(conflist)
    ours = current is not None and record.get("conflist") == conflist and C.is_ours(current)
    try:
        ip = IPRoute2(module)
        containers = attachments(ip, p)
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=False, plugin_dir=plugin_dir, missing_plugins=missing, conflist=conflist,
                  foreign_conflists=others, containers=containers, holding=[], checks=[])

    if p["state"] == "query":
        if p["run_check"]:
            if plugin_dir is None:
                module.fail_json(msg=_missing_msg(p, missing), **result)
            doc = json.loads(current) if ours else None
            result["checks"] = run_check(ip.runner, p, plugin_dir, containers, doc)
        module.exit_json(**result)

    env_current = flatnet_state.read_text(p["subnet_env"])
    if p["state"] == "absent":
        remove(module, record, record_path, conflist, current, ours, env_current, containers, result)

    # present
    if plugin_dir is None:
        module.fail_json(msg=_missing_msg(p, missing), **result)
    if current is not None and not ours:
        module.fail_json(
            msg=f"{conflist} exists and was not written by flatnet.cluster (no marker, or no record in "
                f"{record_path}); it is left alone: move it away, or set flatnet_cni: false",
            **result)
    doc = C.render_conflist(p["network"], p["bridge"], p["mtu"], p["ranges"])
    text = C.conflist_text(doc)
    env_text = C.render_subnet_env(p["cluster_cidrs"], p["pod_cidrs"], p["mtu"], p["masquerade"])
    diff = {"before": "", "after": ""}
    if current != text:
        diff["before"] += f"# {conflist}\n{current or ''}"
        diff["after"] += f"# {conflist}\n{text}"
    if env_current != env_text:
        diff["before"] += f"# {p['subnet_env']}\n{env_current or ''}"
        diff["after"] += f"# {p['subnet_env']}\n{env_text}"
    want_record = {"conflist": conflist, "subnet_env": p["subnet_env"], "network": p["network"]}
    result["changed"] = bool(diff["after"]) or record != want_record
    if result["changed"] and not module.check_mode:
        # the record first: a run interrupted after it still knows the file is ours
        flatnet_state.save(record_path, want_record)
        os.makedirs(p["conf_dir"], mode=0o755, exist_ok=True)
        flatnet_state.write_atomic(conflist, text)
        flatnet_state.write_atomic(p["subnet_env"], env_text)
    result["diff"] = diff
    module.exit_json(**result)


def _missing_msg(p, missing):
    where = "; ".join(f"{d} lacks {', '.join(m)}" for d, m in missing.items()) or "no plugin directory given"
    return (f"the CNI plugins {', '.join(C.PLUGINS)} were not found ({where}): install the "
            f"{C.PACKAGE} package, or set flatnet_cni: false")


if __name__ == "__main__":
    main()
