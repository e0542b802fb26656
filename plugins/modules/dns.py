#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: dns
short_description: Keep the cluster DNS records and the pods' resolv.conf on a node
version_added: 0.2.0
author: flatnet maintainers (@flatnet)
description:
  - Writes the records the cluster DNS pods (dnsmasq with C(--hostsdir)) answer from, one hosts file
    in O(hosts_dir), atomically; dnsmasq notices the change itself (inotify) and rereads it, without
    a restart. Records are C(<service>.<namespace>.svc.<domain>) (A, the ClusterIP) and
    C(<pod>.pod.<domain>) (A and AAAA, the pod's addresses).
  - Writes C(<netns_dir>/<pod>/resolv.conf) for every pod of O(local_pods) but those in O(skip_pods) (the DNS
    pods), with the DNS service address, the search list C(default.svc.<domain> svc.<domain> <domain>)
    and C(options ndots:5). C(ip netns exec) bind-mounts it over C(/etc/resolv.conf).
  - What it wrote is recorded in C(dns.json); files of pods that are gone are removed (only
    recorded ones), and V(absent) removes them all.
options:
  services:
    description: The plan's C(services) (C(name), C(namespace), C(cluster_ip)).
    type: list
    elements: dict
    default: []
  pods:
    description: Every pod of the cluster (C(name), C(ips)), for the pod records.
    type: list
    elements: dict
    default: []
  local_pods:
    description: Names of the pods on this node, which get a resolv.conf.
    type: list
    elements: str
    default: []
  skip_pods:
    description: Pods that get no resolv.conf (the DNS pods, which use the node's resolvers).
    type: list
    elements: str
    default: []
  nameserver:
    description: The cluster DNS service address; V(null) means the cluster DNS is off (as V(absent)).
    type: str
  domain:
    description: The cluster domain.
    type: str
    default: cluster.local
  hosts_dir:
    description: The directory the DNS pods' dnsmasq reads (C(--hostsdir)).
    type: path
    default: /var/lib/flatnet/dns/hosts
  netns_dir:
    description: Where C(ip netns exec) looks for per-namespace files.
    type: path
    default: /etc/netns
  state:
    description: V(present) writes the files; V(absent) removes what was recorded.
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.state
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Reports what would be written or removed.
  diff_mode:
    description: Shows the records file before and after.
"""

EXAMPLES = r"""
- name: Cluster DNS records and resolv.conf of this node's pods
  flatnet.cluster.dns:
    services: "{{ flatnet_plan.services }}"
    pods: "{{ flatnet_plan.nodes.values() | map(attribute='pods') | flatten }}"
    local_pods: "{{ flatnet_plan.nodes[inventory_hostname].pods | map(attribute='name') }}"
    skip_pods: "{{ flatnet_plan.dns.pods }}"
    nameserver: "{{ flatnet_plan.dns.ip }}"
    domain: "{{ flatnet_plan.dns.domain }}"
"""

RETURN = r"""
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
  sample: ["write /var/lib/flatnet/dns/hosts/records", "write /etc/netns/web/resolv.conf"]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.names import is_pod_name

RECORDS = "records"
HEADER = "# flatnet.cluster: written by flatnet.cluster.dns, changes are overwritten\n"


def records(services, pods, domain):
    lines = []
    for svc in sorted(services or [], key=lambda s: (s.get("namespace", "default"), s.get("name", ""))):
        if svc.get("cluster_ip"):
            lines.append(f"{svc['cluster_ip']} {svc['name']}.{svc.get('namespace') or 'default'}.svc.{domain}")
    for pod in sorted(pods or [], key=lambda p: p.get("name", "")):
        for ip in pod.get("ips") or []:
            lines.append(f"{str(ip).split('/', maxsplit=1)[0]} {pod['name']}.pod.{domain}")
    return HEADER + "".join(line + "\n" for line in lines)


def resolv_conf(nameserver, domain, namespace="default"):
    return (HEADER + f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {nameserver}\noptions ndots:5\n")


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="dict", default=[]),
            pods=dict(type="list", elements="dict", default=[]),
            local_pods=dict(type="list", elements="str", default=[]),
            skip_pods=dict(type="list", elements="str", default=[]),
            nameserver=dict(type="str"),
            domain=dict(type="str", default="cluster.local"),
            hosts_dir=dict(type="path", default="/var/lib/flatnet/dns/hosts"),
            netns_dir=dict(type="path", default="/etc/netns"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    record_path = os.path.join(p["state_dir"], "dns.json")
    record = flatnet_state.load_or_fail(module, record_path)
    present = p["state"] == "present" and bool(p["nameserver"])
    result = dict(changed=False, actions=[])
    for name in p["local_pods"]:
        if not is_pod_name(name):
            module.fail_json(msg=f"pod name {name!r} is not a DNS label")

    want = {}  # path -> content
    records_path = os.path.join(p["hosts_dir"], RECORDS)
    if present:
        want[records_path] = records(p["services"], p["pods"], p["domain"])
        skip = set(p["skip_pods"])
        for name in sorted(set(p["local_pods"]) - skip):
            want[os.path.join(p["netns_dir"], name, "resolv.conf")] = resolv_conf(p["nameserver"], p["domain"])
    had = [path for path in record.get("files") or [] if isinstance(path, str)]

    before = read(records_path) if module._diff else None
    for path, content in sorted(want.items()):
        if read(path) != content:
            result["actions"].append(f"write {path}")
            if not module.check_mode:
                flatnet_state.write_atomic(path, content)
    for path in sorted(set(had) - set(want)):
        if os.path.exists(path):
            result["actions"].append(f"remove {path}")
            if not module.check_mode:
                flatnet_state.remove(path)
                flatnet_state.remove_dir_if_empty(os.path.dirname(path))
                if path == records_path:  # and the dns directory the module made
                    flatnet_state.remove_dir_if_empty(os.path.dirname(os.path.dirname(path)))
    if not module.check_mode:
        files = sorted(want)
        if files:
            if record.get("files") != files:
                flatnet_state.save(record_path, {"files": files})
        else:
            flatnet_state.remove(record_path)
    result["changed"] = bool(result["actions"])
    if module._diff:
        result["diff"] = dict(before=before or "", after=want.get(records_path, ""),
                              before_header=records_path, after_header=records_path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
