# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The code is the action plugin plugins/action/verify_report.py; this file only documents it.
from __future__ import annotations

DOCUMENTATION = r"""
module: verify_report
short_description: Build the verification report of a flat pod network from every node's probe results
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - Runs on the controller only (use it with C(run_once)). It gathers the results that
    M(flatnet.cluster.probe) returned on every node and builds one report - a pass/fail
    matrix by source node and destination node, counts per check, and for every failure the
    pair, the protocol, what was seen, the likely cause and the commands to inspect it.
  - The report text is returned in RV(report_text) (and as C(msg)); it can also be written as
    JSON (O(json_path)), JUnit XML (O(junit_path)) and a self-contained HTML page
    (O(html_path)) on the controller.
  - The task fails when any check listed in O(required_checks) failed, or when there is no
    result at all, unless O(fail_on_error=false).
  - See C(docs/verification.md) in the collection for what each check means.
options:
  results:
    description:
      - The probe results - a list of result dictionaries, a list of such lists (one per
        node), a mapping node name to list, or registered M(flatnet.cluster.probe) results.
      - When omitted, the variable O(results_var) of every host in O(hosts) is read.
    type: raw
  hosts:
    description:
      - Hosts whose O(results_var) is read when O(results) is omitted.
      - By default the hosts of the play (C(ansible_play_hosts)).
    type: list
    elements: str
  results_var:
    description: Host variable that holds a node's probe results.
    type: str
    default: flatnet_probe_results
  table_fulls_var:
    description:
      - Host variable that holds the RV(flatnet.cluster.probe#module:neighbour_table_fulls) of a
        node's probe run, read for every host in O(hosts) that has it.
      - When a kernel refused neighbour entries during the probes, the report says so first,
        with the fix, since its timeouts may come from a full neighbour table, not from the network.
    type: str
    default: flatnet_probe_neighbour_table_fulls
  required_checks:
    description:
      - Checks whose failure fails the task; the others are reported as not required.
      - By default every check is required.
    type: list
    elements: str
    choices: [pod-pod, node-pod-local, node-pod-remote, mtu, egress, identity, service]
  plan:
    description:
      - The C(flatnet_plan) fact. Optional; with it the diagnosis knows which peers use host-gw
        and which VXLAN, and the name of the VXLAN device.
    type: dict
  bridge:
    description: Bridge name used in the suggested commands.
    type: str
    default: cni0
  json_path:
    description: Controller path of the JSON report (summary, matrix, failures, all results).
    type: path
  junit_path:
    description: Controller path of a JUnit XML report (one test suite per check).
    type: path
  html_path:
    description:
      - Controller path of a self-contained HTML report - the run's figures, the node by node
        matrix as a coloured grid, and every failed pair with its error, the likely cause and the
        commands to inspect it. No script and no external asset, so it opens offline.
    type: path
    version_added: 0.2.0
  title:
    description: Title of the HTML report.
    type: str
    default: flatnet verification
    version_added: 0.2.0
  fail_on_error:
    description: Fail the task when a required check failed.
    type: bool
    default: true
  max_failures_shown:
    description: Groups of failures (same check, reason and node pair) detailed in the text report; all are in the JSON report.
    type: int
    default: 50
extends_documentation_fragment:
  - flatnet.cluster.attributes.no_diff
  - flatnet.cluster.attributes.controller
attributes:
  check_mode:
    description: Builds the report; the report files are written in check mode too.
seealso:
  - module: flatnet.cluster.probe
"""

EXAMPLES = r"""
- name: Build the report once, from every node's flatnet_probe_results
  flatnet.cluster.verify_report:
    plan: "{{ flatnet_plan }}"
    json_path: "{{ playbook_dir }}/verify-report.json"
    junit_path: "{{ playbook_dir }}/verify-report.xml"
  run_once: true

- name: Report on explicit results, without failing
  flatnet.cluster.verify_report:
    results: "{{ ansible_play_hosts | map('extract', hostvars, 'flatnet_probe_results') | list }}"
    fail_on_error: false
  run_once: true
  register: report
"""

RETURN = r"""
ok:
  description: True when no required check failed.
  returned: always
  type: bool
summary:
  description:
    - Counts over all results. C(passed_on_retry) counts the passes (included in C(passed)) of
      pairs that failed at their first attempt; C(skipped) the checks that could not run (neither
      passed nor failed, their reason is in the text report and in R(skipped,return-skipped)).
  returned: always
  type: dict
  sample: {total: 96, passed: 95, failed: 1, failed_required: 1, passed_on_retry: 2, skipped: 0}
passed_on_retry:
  description: Every result that passed only when retried, with C(pair), C(first_reason) and C(first_error).
  returned: always
  type: list
  elements: dict
skipped:
  description: Every result of a check that could not run, with C(pair); C(error) says why.
  returned: always
  type: list
  elements: dict
by_check:
  description: Counts per check, with whether the check is required.
  returned: always
  type: dict
  sample: {pod-pod: {total: 64, passed: 64, failed: 0, required: true}}
matrix:
  description: Source node → destination node → C({total, passed}).
  returned: always
  type: dict
  sample: {node1: {node1: {total: 8, passed: 8}, node2: {total: 8, passed: 7}}}
failures:
  description:
    - Every failed result, with C(pair) (a readable label), C(required), C(cause) (the likely
      cause) and C(commands) (what to run, and on which node, to look at it).
  returned: always
  type: list
  elements: dict
neighbour_overflow:
  description:
    - Null, or the largest number of neighbour entries per family that a node's kernel refused
      during the probes (C(refused)) and the nodes that saw any (C(nodes)).
  returned: always
  type: dict
  sample: {refused: {ipv4: 1360}, nodes: [node1, node2]}
nodes_without_results:
  description: Hosts of O(hosts) that had no O(results_var).
  returned: when O(results) is omitted
  type: list
  elements: str
report_text:
  description: The report as text.
  returned: always
  type: str
report_lines:
  description: RV(report_text) split into lines, for C(ansible.builtin.debug).
  returned: always
  type: list
  elements: str
"""
