# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin flatnet.cluster.verify_report: the verification report, built on the controller.

Nothing runs on the managed hosts. The documentation lives in plugins/modules/verify_report.py;
the report itself is built by the pure functions of plugins/plugin_utils/report.py.
"""

from __future__ import annotations


from ansible_collections.flatnet.cluster.plugins.module_utils.state import write_atomic
from ansible_collections.flatnet.cluster.plugins.plugin_utils.controller_action import ControllerAction
from ansible_collections.flatnet.cluster.plugins.plugin_utils import html_report
from ansible_collections.flatnet.cluster.plugins.plugin_utils import report as rpt

ARGUMENT_SPEC = {
    "results": {"type": "raw"},
    "hosts": {"type": "list", "elements": "str"},
    "results_var": {"type": "str", "default": "flatnet_probe_results"},
    "table_fulls_var": {"type": "str", "default": "flatnet_probe_neighbour_table_fulls"},
    "required_checks": {"type": "list", "elements": "str"},
    "plan": {"type": "dict"},
    "bridge": {"type": "str", "default": "cni0"},
    "json_path": {"type": "path"},
    "junit_path": {"type": "path"},
    "html_path": {"type": "path"},
    "title": {"type": "str", "default": "flatnet verification"},
    "fail_on_error": {"type": "bool", "default": True},
    "max_failures_shown": {"type": "int", "default": 50},
}


def _write(path, text):
    """Write atomically; True when the content changed."""
    return write_atomic(path, text)


def collect(args, task_vars):
    """The results to report on: the ``results`` option, else each host's ``results_var``;
    and each host's ``table_fulls_var`` where set."""
    hostvars = task_vars.get("hostvars", {})
    hosts = args.get("hosts") or task_vars.get("ansible_play_hosts") or []
    table_fulls = {host: hostvars.get(host, {}).get(args["table_fulls_var"]) for host in hosts}
    table_fulls = {host: value for host, value in table_fulls.items() if isinstance(value, dict)}
    if args.get("results") is not None:
        return args["results"], [], table_fulls
    results, missing = [], []
    for host in hosts:
        value = hostvars.get(host, {}).get(args["results_var"])
        if value is None:
            missing.append(host)
        else:
            results.append(value)
    return results, missing, table_fulls


class ActionModule(ControllerAction):
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def run_on_controller(self, result, args, task_vars):
        unknown = sorted(set(args.get("required_checks") or []) - set(rpt.CHECKS))
        if unknown:
            known = ", ".join(rpt.CHECKS)
            return dict(result, failed=True, msg=f"unknown checks in required_checks: {', '.join(unknown)}; known: {known}")
        raw, missing, table_fulls = collect(args, task_vars)
        try:
            report = rpt.build(raw, args.get("required_checks"), args.get("plan"), args["bridge"],
                               table_fulls)
        except rpt.ReportError as exc:
            return dict(result, failed=True, msg=f"cannot read the probe results: {exc}")
        report["nodes_without_results"] = missing
        text = rpt.render_text(report, args["max_failures_shown"])
        if missing:
            text += "\n\nnodes without probe results (did the probe task run there?): " + ", ".join(missing)
        changed = False
        if args.get("json_path"):
            changed |= _write(args["json_path"], rpt.to_json(report))
        if args.get("junit_path"):
            changed |= _write(args["junit_path"], rpt.to_junit(report))
        if args.get("html_path"):
            changed |= _write(args["html_path"], html_report.render(report, args["title"], args.get("plan")))
        failed = not report["ok"] or report["summary"]["total"] == 0
        result.update(
            changed=changed,
            ok=report["ok"],
            summary=report["summary"],
            by_check=report["by_check"],
            matrix=report["matrix"],
            failures=report["failures"],
            passed_on_retry=report["passed_on_retry"],
            skipped=report["skipped"],
            nodes_without_results=missing,
            neighbour_overflow=report["neighbour_overflow"],
            report_text=text,
            report_lines=text.splitlines(),
            msg=text,
        )
        if failed and args["fail_on_error"]:
            result["failed"] = True
            if report["summary"]["total"] == 0:
                result["msg"] = "no probe results to report on\n" + text
        return result
