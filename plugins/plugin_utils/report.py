# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn the probe results of every node into a verification report (controller side, pure).

A result is what ``flatnet.cluster.probe`` returns per check::

    {check, proto, src_node, src, src_ip, dst_node, dst, dst_ip, ok, reason, seen, expected, error}

The report has a pass/fail matrix (source node × destination node), counts per check, and for
every failure the likely cause and the commands to look at it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from ansible_collections.flatnet.cluster.plugins.plugin_utils.peer_views import peers_of
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import PlanError

CHECKS = ["pod-pod", "node-pod-local", "node-pod-remote", "mtu", "egress", "identity", "service"]
# Containers attached through CNI (plugins/filter/cni_label_results.py names their checks).
CHECKS += ["pod-container", "container-container", "node-container-local", "node-container-remote", "cni-check"]
# NodePort services from outside the cluster (service_probe mode=outside).
CHECKS += ["nodeport"]
# The bgp backend (plugin_utils/bgp_plan.py check_results; roles/verify/tasks/bgp.yml).
CHECKS += ["bgp-session", "bgp-routes"]
FIELDS = ["check", "proto", "src_node", "src", "src_ip", "dst_node", "dst", "dst_ip",
          "ok", "reason", "seen", "expected", "error"]
# Optional fields: a pair that failed once and passed when retried (probe's retry round), and a
# check that could not run (``skipped``: its reason is in ``error``; neither passed nor failed).
EXTRA_FIELDS = ["retried", "first_reason", "first_error", "skipped"]


class ReportError(Exception):
    """The results cannot be read (wrong shape)."""


# Above this many nodes the text report lists the failed node pairs instead of the grid.
MATRIX_MAX_NODES = 16


def flatten(results):
    """A flat list of result dicts from what the playbook hands over.

    Accepts a list of results, a list of lists (one per node, as ``map('extract', ...)``
    gives), or a mapping node → list. ``None`` entries (a node that did not probe) are skipped.
    """
    if results is None:
        return []
    if isinstance(results, dict):
        if "check" in results:
            return [_normalise(results)]
        results = [results[k] for k in sorted(results)]
    if not isinstance(results, (list, tuple)):
        raise ReportError(f"results must be a list, got {type(results).__name__}")
    out = []
    for item in results:
        if item is None:
            continue
        if isinstance(item, dict) and "results" in item and "check" not in item:
            item = item["results"]  # a registered probe result
        if isinstance(item, (list, tuple)):
            out.extend(flatten(list(item)))
        elif isinstance(item, dict):
            out.append(_normalise(item))
        else:
            raise ReportError(f"a result must be a mapping, got {item!r}")
    return out


def _normalise(r):
    missing = [k for k in ("check", "src_node", "ok") if k not in r]
    if missing:
        raise ReportError(f"result without {', '.join(missing)}: {r!r}")
    out = {k: r.get(k) for k in FIELDS}
    out["ok"] = bool(r["ok"])
    out["reason"] = out["reason"] or ("ok" if out["ok"] else "error")
    out["retried"] = bool(r.get("retried"))
    out["skipped"] = bool(r.get("skipped"))
    if out["skipped"]:
        out["ok"], out["reason"] = True, "skipped"  # never a failure, never counted as passed
    if out["retried"]:
        out["first_reason"], out["first_error"] = r.get("first_reason"), r.get("first_error")
    return out


def passed_on_retry(r):
    return r["ok"] and r.get("retried") and not r.get("skipped")


def pair_label(r):
    src = f"{r['src_node']}/{r['src']}" + (f" ({r['src_ip']})" if r.get("src_ip") else "")
    if r.get("dst_node"):
        dst = f"{r['dst_node']}/{r['dst']}"
    else:
        dst = r.get("dst") or "?"
    if r.get("dst_ip"):
        dst += f" ({r['dst_ip']})"
    return f"{src} -> {dst}"


def peer_mode(plan, src_node, dst_node):
    """``direct``, ``vxlan``, ``local`` or None (unknown without a plan)."""
    if src_node == dst_node:
        return "local"
    if not plan:
        return None
    nodes = plan.get("nodes") or {}
    if src_node not in nodes or dst_node not in nodes:
        return None
    try:
        peers = peers_of(plan, src_node)
    except (PlanError, ValueError):
        return None
    return next((p["mode"] for p in peers if p["name"] == dst_node), None)


def _underlay_ip(plan, node):
    return (((plan or {}).get("nodes", {}).get(node) or {}).get("underlay") or {}).get("ip")


def _diagnose_bgp(r, on):
    sn, reason = r["src_node"], r["reason"]
    birdc = "birdc -s /run/flatnet/bird.ctl"  # the lab's socket; real hosts: plain birdc
    if reason == "bird-down":
        return (f"BIRD does not run (or does not answer) on {sn}: rerun playbooks/site.yml to start it",
                [on(sn, "cat /var/lib/flatnet/bgp.json /var/lib/flatnet/bird.log"), on(sn, "systemctl status bird")])
    if reason == "session-down":
        return (f"the BGP session {sn} -> {r.get('dst_node')} ({r.get('dst_ip')}) is {r.get('seen')}: the peer's BIRD "
                "is down, TCP port 179 is blocked, or the two configurations disagree (rerun site.yml on both)",
                [on(sn, f"{birdc} show protocols all"), on(sn, f"ping -c1 {r.get('dst_ip')}")])
    if reason == "foreign-prefix":
        return (f"{sn} has a proto bird route the plan did not give to that next hop: a stale route of an old "
                "BIRD, or a BIRD that is not flatnet's",
                [on(sn, "ip route show proto bird"), on(sn, f"{birdc} show route all {r.get('dst')}")])
    return (f"{sn} did not learn {r.get('dst')} from {r.get('dst_node')} ({reason}): the owner's session or "
            "announcement is missing, or the import filter refused it",
            [on(sn, f"{birdc} show route all {r.get('dst')}"), on(sn, f"{birdc} show protocols")])


def diagnose(r, plan=None, bridge="cni0"):
    """(likely cause, [commands]) for one failed result; commands are prefixed with the node."""
    check, reason = r["check"], r["reason"]
    sn, dn = r["src_node"], r.get("dst_node")
    src, dst, dst_ip, src_ip = r["src"], r.get("dst"), r.get("dst_ip"), r.get("src_ip")
    in_src = f"ip -n {src} " if src and src != "host" else "ip "
    vxlan_dev = ((plan or {}).get("vxlan") or {}).get("device") or "flatnet.1"
    mode = peer_mode(plan, sn, dn) if dn else None

    def on(node, cmd):
        return f"on {node}: {cmd}"

    if check == "nodeport":
        return (f"node port {dst} of {dn} does not behave as its policy says seen from outside the cluster "
                f"({src}): the service-nodeports map or the ext- chain of the service, the masquerade mark "
                f"(policy Cluster), or the node's local endpoints (policy Local)",
                [on(dn, "nft list table ip flatnet-svc"), on(dn, "conntrack -L -d " + str(dst_ip)),
                 on(dn, f"ip route get {src_ip or '<the outside address>'}")])

    if check in ("bgp-session", "bgp-routes"):
        return _diagnose_bgp(r, on)
    if reason == "bad-address":
        return (f"pod {src} on {sn} does not carry its planned addresses (or eth0 is down): it was changed "
                f"by hand or the pods step did not run; rerun playbooks/site.yml",
                [on(sn, f"ip -n {src} addr show dev eth0"), on(sn, f"ip -n {src} route")])
    if reason == "bad-mtu":
        return (f"pod {src} on {sn} has another MTU than the plan: changed by hand, or the pods step ran "
                f"with another flatnet_mtu; rerun playbooks/site.yml",
                [on(sn, f"ip -n {src} link show dev eth0"), on(sn, f"ip link show master {bridge}")])
    if reason == "refused":
        return (f"nothing listens on {dst_ip} in pod {dst} (probe agent not running) or a rule rejects it",
                [on(dn or sn, f"ip netns pids {dst}"), on(dn or sn, f"ip netns exec {dst} ss -lntup"),
                 on(dn or sn, "cat /run/flatnet/probe/" + f"{dst}.log")])
    if reason == "wrong-pod":
        return (f"another pod answers for {dst_ip}: a duplicate address, or a stale route or neighbour entry "
                f"sends it to the wrong place",
                [on(dn, f"ip -n {dst} addr show dev eth0"), on(sn, f"ip route get {dst_ip}"),
                 on(sn, f"ip neigh show to {dst_ip}")])
    if reason == "mtu-too-small":
        cmds = [on(sn, f"ip -n {src} link show dev eth0"), on(sn, f"ip route get {dst_ip}"),
                on(sn, f"ip link show dev {bridge}")]
        if mode in ("vxlan", None):
            cmds.append(on(sn, f"ip -d link show dev {vxlan_dev}"))
        return ("the path between the nodes carries fewer bytes than the pod MTU: the VXLAN overhead (50 bytes, "
                "70 over IPv6) was not subtracted or the underlay MTU is smaller than planned; set flatnet_mtu",
                cmds)
    if reason == "mtu-not-enforced":
        return (f"pod {src}'s interface or route allows more than the planned MTU: packets above it are "
                f"dropped or fragmented on the way instead of being refused in the pod",
                [on(sn, f"ip -n {src} link show dev eth0"), on(sn, f"ip -n {src} route show"),
                 on(sn, f"ip link show master {bridge}")])
    if reason == "wrong-source":
        if check == "egress":
            return (f"traffic from pod {src} to the outside is not masqueraded to the underlay IP of {sn}",
                    [on(sn, "nft list table inet flatnet"), on(sn, f"ip route get {dst_ip}")])
        if check == "pod-pod":
            return (f"pod traffic is NATed between {sn} and {dn}: a masquerade rule catches pod-to-pod "
                    f"traffic (it must exclude the cluster CIDR)",
                    [on(sn, "nft list table inet flatnet"), on(sn, "nft list ruleset"),
                     on(dn, f"conntrack -L -d {dst_ip}")])
        return (f"{sn} reached the pod from an address that is not its own (NAT on the path, or a route "
                f"with a foreign source)",
                [on(sn, f"ip route get {dst_ip}"), on(sn, "nft list table inet flatnet")])
    if reason in ("timeout", "unreachable", "error"):
        if check == "egress":
            return (f"pod {src} cannot reach {dst_ip}: no default route in the pod, forwarding off, or no "
                    f"masquerade (the answer to a pod IP cannot come back)",
                    [on(sn, f"{in_src}route"), on(sn, f"ip route get {dst_ip}"),
                     on(sn, "sysctl net.ipv4.ip_forward"), on(sn, "nft list table inet flatnet")])
        if mode == "local":
            if src == "host":
                return (f"the node cannot reach its own pod {dst}: bridge {bridge} down or without its gateway "
                        f"address, or the pod's veth is not attached",
                        [on(sn, f"ip addr show dev {bridge}"), on(sn, f"ip route get {dst_ip}"),
                         on(sn, f"bridge link show master {bridge}")])
            return (f"pods on {sn} do not reach each other through bridge {bridge}: veth not attached or down, "
                    f"or a bridge firewall (br_netfilter) drops it",
                    [on(sn, f"bridge link show master {bridge}"), on(sn, f"ip -n {src} route"),
                     on(sn, "sysctl net.bridge.bridge-nf-call-iptables"), on(sn, "nft list ruleset")])
        cmds = [on(sn, f"ip route get {dst_ip}" + (f" from {src_ip} iif {bridge}" if src_ip else "")),
                on(dn, f"ip route get {src_ip or _underlay_ip(plan, sn) or '<' + sn + ' address>'}"),
                on(sn, "sysctl net.ipv4.ip_forward"), on(dn, "sysctl net.ipv4.ip_forward"),
                on(dn, "nft list table inet flatnet")]
        if mode == "direct":
            cause = (f"no working host-gw path {sn} -> {dn}: route to {dn}'s pod CIDR via its underlay IP "
                     f"missing, forwarding off, rp_filter, or a firewall drops it (with many pods, also a full "
                     f"neighbour table: 'neighbour table overflow' in dmesg, raise gc_thresh3)")
        elif mode == "vxlan":
            cause = (f"no working VXLAN path {sn} -> {dn}: route, neighbour or FDB entry for {dn} missing on "
                     f"{vxlan_dev}, or the VXLAN UDP port is blocked on the underlay")
            cmds[1:1] = [on(sn, f"ip neigh show dev {vxlan_dev}"), on(sn, f"bridge fdb show dev {vxlan_dev}"),
                         on(dn, f"ip -d link show dev {vxlan_dev}")]
        else:
            cause = (f"no working path {sn} -> {dn}: the route to {dn}'s pod CIDR (host-gw or VXLAN) is missing, "
                     f"forwarding is off, or a firewall drops it")
            cmds[1:1] = [on(sn, f"ip neigh show dev {vxlan_dev}"), on(sn, f"bridge fdb show dev {vxlan_dev}")]
        return cause, cmds
    return (r.get("error") or reason, [])


def neighbour_overflow(table_fulls):
    """``{node: {"ipv4": n, "ipv6": n}}`` from the probe runs -> the worst count per family and
    the nodes that saw one, or None. Max, not sum: lab nodes share one kernel and one table."""
    worst, nodes = {}, []
    for node, counts in sorted((table_fulls or {}).items()):
        hit = False
        for family, count in (counts or {}).items():
            if isinstance(count, int) and count > 0:
                worst[family] = max(worst.get(family, 0), count)
                hit = True
        if hit:
            nodes.append(node)
    return dict(refused=dict(sorted(worst.items())), nodes=nodes) if nodes else None


OVERFLOW_ADVICE = (
    "the kernel's neighbour table was full while probing, so it refused {what} on {nodes}; "
    "probes then time out whatever the network does. Raise the limits on those hosts: "
    "sysctl -w net.ipv4.neigh.default.gc_thresh3=65536 (and gc_thresh1/2, the net.ipv6 ones too). "
    "flatnet.cluster.node raises them on real hosts; in the lab every node shares the one "
    "table of the machine it runs on, whose limits only the machine's own root can raise"
)


def build(results, required_checks=None, plan=None, bridge="cni0", table_fulls=None):
    """The report as a JSON-able dict. ``table_fulls``: each node's refused neighbour entries
    during its probes (the probe module's ``neighbour_table_fulls``)."""
    results = flatten(results)
    required = set(CHECKS if required_checks is None else required_checks)
    by_check = {}
    matrix = {}
    failures = []
    retried, skipped = [], []
    for r in results:
        c = by_check.setdefault(r["check"], {"total": 0, "passed": 0, "failed": 0,
                                             "required": r["check"] in required,
                                             "passed_on_retry": 0, "skipped": 0})
        c["total"] += 1
        if r["skipped"]:
            c["skipped"] += 1
            skipped.append(dict(r, pair=pair_label(r)))
            continue
        c["passed" if r["ok"] else "failed"] += 1
        if passed_on_retry(r):
            c["passed_on_retry"] += 1
            retried.append(dict(r, pair=pair_label(r)))
        if r.get("dst_node"):
            cell = matrix.setdefault(r["src_node"], {}).setdefault(r["dst_node"], {"total": 0, "passed": 0})
            cell["total"] += 1
            cell["passed"] += 1 if r["ok"] else 0
        if not r["ok"]:
            cause, commands = diagnose(r, plan, bridge)
            failures.append(dict(r, pair=pair_label(r), required=r["check"] in required,
                                 cause=cause, commands=commands))
    failed_required = sum(1 for f in failures if f["required"])
    nodes = sorted(set(matrix) | {d for row in matrix.values() for d in row})
    return {
        "ok": failed_required == 0,
        "summary": {"total": len(results), "passed": len(results) - len(failures) - len(skipped),
                    "failed": len(failures), "failed_required": failed_required,
                    "passed_on_retry": len(retried), "skipped": len(skipped)},
        "by_check": {k: by_check[k] for k in sorted(by_check, key=_check_order)},
        "nodes": nodes,
        "matrix": matrix,
        "failures": failures,
        "passed_on_retry": retried,
        "skipped": skipped,
        "results": results,
        "neighbour_overflow": neighbour_overflow(table_fulls),
    }


def _check_order(name):
    return (CHECKS.index(name) if name in CHECKS else len(CHECKS), name)


def render_text(report, max_failures=50):
    """Human-readable report (what the playbook prints)."""
    s = report["summary"]
    optional = s["failed"] - s["failed_required"]
    lines = [f"flatnet verification: {'PASS' if report['ok'] else 'FAIL'} - {s['passed']}/{s['total']} checks "
             f"passed, {s['failed']} failed" + (f" ({optional} of them in checks not required)" if optional else "")
             + (f", {s['passed_on_retry']} passed on retry" if s.get("passed_on_retry") else "")
             + (f", {s['skipped']} skipped" if s.get("skipped") else "")]
    overflow = report.get("neighbour_overflow")
    if overflow:
        what = " and ".join(f"{n} new {fam.replace('ipv', 'IPv')} neighbour entries"
                            for fam, n in overflow["refused"].items())
        lines.append("WARNING: " + OVERFLOW_ADVICE.format(what=what, nodes=", ".join(overflow["nodes"])))
    lines.append("")
    lines.append("by check:")
    for name, c in report["by_check"].items():
        flag = "" if c["required"] else " (not required)"
        if c.get("passed_on_retry"):
            flag += f" ({c['passed_on_retry']} on retry)"
        if c.get("skipped"):
            flag += f" ({c['skipped']} skipped)"
        lines.append(f"  {name:<16} {c['passed']:>5}/{c['total']:<5} passed{flag}")
    nodes = report["nodes"]
    if len(nodes) > MATRIX_MAX_NODES:
        # A 100-column grid helps nobody on a terminal: only the node pairs that failed.
        bad = [(src, dst, cell) for src in nodes for dst, cell in sorted(report["matrix"].get(src, {}).items())
               if cell["passed"] != cell["total"]]
        lines.append("")
        lines.append(f"matrix: {len(nodes)} nodes, {sum(len(row) for row in report['matrix'].values())} node pairs "
                     f"probed, {len(bad)} with failures (the whole matrix is in the JSON and HTML reports)"
                     + (":" if bad else ""))
        for src, dst, cell in bad[:max_failures * 4]:
            lines.append(f"  {src} -> {dst}: {cell['passed']}/{cell['total']} passed")
        if len(bad) > max_failures * 4:
            lines.append(f"  ... and {len(bad) - max_failures * 4} more node pairs with failures")
    elif nodes:
        lines.append("")
        lines.append("matrix (passed/total, row = source node, column = destination node):")
        width = max(12, *(len(n) + 2 for n in nodes))
        lines.append(" " * width + "".join(f"{n:>{width}}" for n in nodes))
        for src in nodes:
            row = f"{src:<{width}}"
            for dst in nodes:
                cell = report["matrix"].get(src, {}).get(dst)
                if cell is None:
                    text = "-"
                else:
                    mark = "" if cell["passed"] == cell["total"] else " !"
                    text = f"{cell['passed']}/{cell['total']}{mark}"
                row += f"{text:>{width}}"
            lines.append(row)
    groups = group_failures(report["failures"])
    if groups:
        lines.append("")
        lines.append(f"failures ({len(report['failures'])}, in {len(groups)} groups of the same kind and node pair):")
        for g in groups[:max_failures]:
            first = g["failures"][0]
            tag = "" if first["required"] else " [not required]"
            dst = first.get("dst_node") or first.get("dst")
            count = len(g["failures"])
            lines.append(f"- {first['check']} {first['src_node']} -> {dst}: {first['reason']}{tag}"
                         f" ({count} {'probe' if count == 1 else 'probes'})")
            for f in g["failures"][:5]:
                lines.append(f"    {f['proto']:<5} {f['pair']}")
            if count > 5:
                lines.append(f"    ... and {count - 5} more")
            lines.append(f"    seen:     {first.get('seen')}")
            lines.append(f"    expected: {first.get('expected')}")
            if first.get("error"):
                lines.append(f"    error:    {first['error']}")
            lines.append(f"    likely:   {first['cause']}")
            for cmd in first["commands"]:
                lines.append(f"    inspect:  {cmd}")
        if len(groups) > max_failures:
            lines.append(f"... and {len(groups) - max_failures} more groups of failures (see the JSON report)")
    retried = report.get("passed_on_retry") or []
    if retried:
        lines.append("")
        lines.append(f"passed on retry ({len(retried)}: failed at the first attempt, passed when run again "
                     f"with a timeout adapted to the measured load; a sign of load or of a flaky path):")
        for r in retried[:max_failures]:
            lines.append(f"  {r['check']:<16} {r['proto']:<5} {r['pair']}: first {r.get('first_reason')}"
                         + (f" ({r['first_error']})" if r.get("first_error") else ""))
        if len(retried) > max_failures:
            lines.append(f"  ... and {len(retried) - max_failures} more (see the JSON report)")
    skipped = report.get("skipped") or []
    if skipped:
        lines.append("")
        lines.append(f"skipped ({len(skipped)}: not run, neither passed nor failed):")
        for r in skipped[:max_failures]:
            lines.append(f"  {r['check']:<16} {r['proto'] or '-':<5} {r['pair']}: {r.get('error')}")
    return "\n".join(lines)


def group_failures(failures):
    """Failures of the same check and reason between the same two nodes, in first-seen order."""
    groups = {}
    for f in failures:
        key = (f["check"], f["reason"], f["src_node"], f.get("dst_node") or f.get("dst"), f["required"])
        groups.setdefault(key, {"key": key, "failures": []})["failures"].append(f)
    return list(groups.values())


def to_json(report):
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def to_junit(report, suite_prefix="flatnet"):
    """JUnit XML: one testsuite per check, one testcase per result."""
    root = ET.Element("testsuites", name=suite_prefix, tests=str(report["summary"]["total"]),
                      failures=str(report["summary"]["failed"]))
    suites = {}
    # Failures are listed in the order of the failed results; reuse their diagnosis.
    failures = iter(report["failures"])
    for r in report["results"]:
        suite = suites.get(r["check"])
        if suite is None:
            suite = suites[r["check"]] = ET.SubElement(root, "testsuite", name=f"{suite_prefix}.{r['check']}")
        case = ET.SubElement(suite, "testcase", classname=f"{suite_prefix}.{r['check']}.{r['proto']}",
                             name=pair_label(r))
        if r.get("skipped"):
            ET.SubElement(case, "skipped", message=r.get("error") or "skipped")
        elif passed_on_retry(r):
            # JUnit has no "flaky" state: a property and the first error in system-out.
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="passed_on_retry", value="true")
            ET.SubElement(props, "property", name="first_reason", value=str(r.get("first_reason")))
            out = ET.SubElement(case, "system-out")
            out.text = f"passed on retry; first attempt: {r.get('first_reason')}: {r.get('first_error') or ''}".strip()
        if not r["ok"]:
            f = next(failures)
            cause, commands = f["cause"], f["commands"]
            fail = ET.SubElement(case, "failure", message=f"{r['reason']}: {r.get('error') or ''}".strip(),
                                 type=r["reason"])
            fail.text = "\n".join([f"seen: {r.get('seen')}", f"expected: {r.get('expected')}",
                                   f"likely: {cause}"] + [f"inspect: {c}" for c in commands])
    for name, suite in suites.items():
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
        suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
