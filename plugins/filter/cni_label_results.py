# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: cni_label_results
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: Name containers attached through CNI as containers in probe results
description:
  - The verify role probes containers attached through CNI like pods (their network namespaces
    get probe agents). This filter renames, in the results of M(flatnet.cluster.probe), every
    end that is such a container to C(container:<first 12 characters of its ID>) and gives the
    checks that involve one their own names - C(pod-container) (pod to container or back),
    C(container-container), C(node-container-local) and C(node-container-remote).
  - The same plugin file also provides C(cni_check_results) (the CNI C(CHECK) results of
    M(flatnet.cluster.cni) as C(cni-check) results) and C(cni_required_checks) (the container
    checks that follow from a list of required pod checks).
options:
  _input:
    description: Results of M(flatnet.cluster.probe).
    type: list
    elements: dict
    required: true
  containers:
    description: The attached containers, each with C(netns) and C(container_id).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Results with containers named as such
  ansible.builtin.set_fact:
    flatnet_probe_results: "{{ probe.results | flatnet.cluster.cni_label_results(containers) }}"
"""

RETURN = r"""
_value:
  description: The results, relabelled.
  type: list
  elements: dict
"""

CONTAINER_CHECKS = {
    "pod-pod": ["pod-container", "container-container"],
    "node-pod-local": ["node-container-local"],
    "node-pod-remote": ["node-container-remote"],
}
CNI_CHECK = "cni-check"


def container_label(container_id) -> str:
    return f"container:{str(container_id)[:12]}"


def cni_label_results(results, containers):
    names = {c["netns"]: container_label(c["container_id"]) for c in containers or [] if c.get("netns")}
    out = []
    for r in results or []:
        r = dict(r)
        src_c = r.get("src") in names
        dst_c = r.get("dst") in names
        if r.get("check") == "pod-pod" and (src_c or dst_c):
            r["check"] = "container-container" if src_c and dst_c else "pod-container"
        elif r.get("check") in ("node-pod-local", "node-pod-remote") and dst_c:
            r["check"] = r["check"].replace("-pod-", "-container-")
        for end in ("src", "dst"):
            if r.get(end) in names:
                r[end] = names[r[end]]
        for key in ("expected", "seen"):
            if isinstance(r.get(key), str) and r[key] in names:
                r[key] = names[r[key]]
        out.append(r)
    return out


def cni_check_results(checks, node):
    """CNI CHECK results of one node (cni module, run_check) as report results."""
    out = []
    for c in checks or []:
        out.append({
            "check": CNI_CHECK, "proto": "cni", "src_node": node, "src": container_label(c.get("container_id")),
            "src_ip": c.get("ip"), "dst_node": node, "dst": container_label(c.get("container_id")),
            "dst_ip": c.get("ip"), "ok": bool(c.get("ok")), "reason": None if c.get("ok") else "cni-check-failed",
            "seen": None, "expected": "CHECK passes", "error": None if c.get("ok") else c.get("msg"),
        })
    return out


def cni_required_checks(required):
    """The container checks (and cni-check) that follow from the required pod checks."""
    out = list(required or [])
    for name in list(out):
        out += [c for c in CONTAINER_CHECKS.get(name, []) if c not in out]
    if CNI_CHECK not in out:
        out.append(CNI_CHECK)
    return out


class FilterModule:
    def filters(self):
        return {
            "cni_label_results": cni_label_results,
            "cni_check_results": cni_check_results,
            "cni_required_checks": cni_required_checks,
        }
