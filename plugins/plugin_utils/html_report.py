# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verification report as one self-contained HTML page (controller side, pure).

Input: the report dict of ``report.build``. Output: a page with the run's figures, the
node × node matrix as a coloured grid, and every failed pair with its error, the likely cause
and the commands the text report gives. No script, no external asset (styles inline, no
``src=``, no remote ``href``), so it opens offline and from a CI artifact. Every text that
comes from the run (node and pod names, errors, seen values) is escaped.
"""

from __future__ import annotations

import html

from ansible_collections.flatnet.cluster.plugins.plugin_utils.report import group_failures

STYLE = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; margin: 0 0 .3em 0; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.verdict { display: inline-block; padding: .15em .6em; border-radius: .3em; color: #fff; font-weight: bold; }
.verdict.pass { background: #1b7837; } .verdict.fail { background: #d6202b; }
.figures { display: flex; flex-wrap: wrap; gap: .8em; margin: 1em 0; }
.figure { border: 1px solid #ccc; border-radius: .3em; padding: .4em .8em; min-width: 7em; }
.figure .n { font-size: 1.6em; font-weight: bold; display: block; }
.figure.bad .n { color: #d6202b; }
table { border-collapse: collapse; }
td, th { padding: .25em .6em; border: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
table.grid td.cell { text-align: center; font-family: "DejaVu Sans Mono", monospace; min-width: 5.5em; }
table.grid td.pass { background: #b8e0b8; }
table.grid td.partial { background: #fdd49e; }
table.grid td.fail { background: #f4a3a3; }
table.grid td.none { background: #eeeeee; color: #777; }
table.grid a { color: inherit; }
.warning { border: 2px solid #b35806; background: #fff3e0; padding: .5em .8em; }
.group { border: 1px solid #e0b4b4; border-left: 5px solid #d6202b; padding: .5em .8em; margin: .8em 0; }
.group.optional { border-left-color: #b35806; }
.group h3 { margin: 0 0 .4em 0; font-size: 1.05em; }
.cause { margin: .3em 0; }
code, pre { font-family: "DejaVu Sans Mono", monospace; font-size: .9em; }
pre { background: #f6f6f6; padding: .4em .6em; margin: .3em 0; white-space: pre-wrap; }
.muted { color: #777; }
#checks tr.fail td { color: #d6202b; font-weight: bold; }
.retry { border-left: 5px solid #e6a100; padding: .2em .8em; }
tr.passed-on-retry td { background: #fff6d5; }
"""


def e(value):
    """Escaped text for an element or an attribute (quotes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def _anchor(check, reason, src, dst):
    raw = f"{check}-{reason}-{src}-{dst}"
    return "f-" + "".join(c if c.isalnum() or c in "-_" else f"_{ord(c):x}" for c in raw)


def _cell(report, src, dst, first_group):
    cell = report["matrix"].get(src, {}).get(dst)
    attrs = f'data-src="{e(src)}" data-dst="{e(dst)}"'
    if cell is None:
        return f'<td class="cell none" {attrs} title="no probe">-</td>'
    passed, total = cell["passed"], cell["total"]
    kind = "pass" if passed == total else ("fail" if passed == 0 else "partial")
    text = f"{passed}/{total}"
    title = f"{src} → {dst}: {passed} of {total} probes passed"
    link = first_group.get((src, dst))
    if kind != "pass" and link:
        text = f'<a href="#{e(link)}">{e(text)}</a>'
    else:
        text = e(text)
    return f'<td class="cell {kind}" {attrs} title="{e(title)}">{text}</td>'


def _figure(label, value, bad=False):
    return f'<div class="figure{" bad" if bad else ""}"><span class="n">{e(value)}</span>{e(label)}</div>'


def render(report, title="flatnet verification", plan=None):
    """The whole page as a string."""
    s = report["summary"]
    ok = report["ok"]
    nodes = report["nodes"]
    pods = sorted({(r["src_node"], r["src"]) for r in report.get("results") or [] if r.get("src") not in (None, "host")}
                  | {(r["dst_node"], r["dst"]) for r in report.get("results") or [] if r.get("dst_node") and r.get("dst")})
    plan_nodes = (plan or {}).get("nodes") or {}
    pod_count = sum(len(n.get("pods") or []) for n in plan_nodes.values()) if plan_nodes else len(pods)
    groups = group_failures(report["failures"])
    first_group = {}
    for g in groups:
        f = g["failures"][0]
        if f.get("dst_node"):
            first_group.setdefault((f["src_node"], f["dst_node"]), _anchor(*g["key"][:4]))
    failed_pairs = {(f["src_node"], f.get("dst_node") or f.get("dst")) for f in report["failures"]}

    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{e(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>"]
    verdict = "PASS" if ok else "FAIL"
    out.append(f'<h1>{e(title)} <span class="verdict {verdict.lower()}" id="verdict">{verdict}</span></h1>')
    optional = s["failed"] - s["failed_required"]
    out.append(f'<p id="summary">{e(s["passed"])} of {e(s["total"])} checks passed, {e(s["failed"])} failed'
               + (f" ({e(optional)} of them in checks not required)" if optional else "") + ".</p>")
    out.append('<div class="figures" id="figures">')
    out.append(_figure("checks", s["total"]))
    out.append(_figure("passed", s["passed"]))
    out.append(_figure("failed", s["failed"], s["failed"] > 0))
    out.append(_figure("failed, required", s["failed_required"], s["failed_required"] > 0))
    out.append(_figure("passed on retry", s.get("passed_on_retry", 0)))
    if s.get("skipped"):
        out.append(_figure("skipped", s["skipped"], True))
    out.append(_figure("nodes", len(plan_nodes) or len(nodes)))
    out.append(_figure("pods", pod_count))
    out.append(_figure("node pairs failing", len(failed_pairs), bool(failed_pairs)))
    if plan:
        if plan.get("backend"):
            out.append(_figure("backend", plan["backend"]))
        if plan.get("mtu"):
            out.append(_figure("pod MTU", plan["mtu"]))
    out.append("</div>")

    overflow = report.get("neighbour_overflow")
    if overflow:
        what = ", ".join(f"{n} {fam} entries refused" for fam, n in overflow["refused"].items())
        out.append(f'<p class="warning" id="overflow">The kernel\'s neighbour table was full while probing on '
                   f'{e(", ".join(overflow["nodes"]))} ({e(what)}): timeouts may come from the table, not from the '
                   f'network. Raise net.ipv4.neigh.default.gc_thresh3 (and gc_thresh1/2, the IPv6 ones too).</p>')
    missing = report.get("nodes_without_results") or []
    if missing:
        out.append(f'<p class="warning" id="missing">Nodes without probe results (did the probe task run '
                   f'there?): {e(", ".join(missing))}</p>')

    out.append("<h2>By check</h2>")
    out.append('<table id="checks"><tr><th>check</th><th>passed</th><th>of them on retry</th><th>failed</th>'
               '<th>skipped</th><th>total</th><th>required</th></tr>')
    for name, c in report["by_check"].items():
        note = "yes" if c["required"] else "no"
        cls = ' class="fail"' if c["failed"] else ""
        out.append(f"<tr{cls}><td>{e(name)}</td><td>{e(c['passed'])}</td><td>{e(c.get('passed_on_retry', 0))}</td>"
                   f"<td>{e(c['failed'])}</td><td>{e(c.get('skipped', 0))}</td>"
                   f"<td>{e(c['total'])}</td><td class=\"muted\">{e(note)}</td></tr>")
    out.append("</table>")

    out.append("<h2>Node × node matrix</h2>")
    out.append('<p class="muted">Probes passed / run, row = source node, column = destination node '
               '(pods and the node itself). Green: all passed; orange: some failed; red: all failed; '
               'a failing cell links to its failures.</p>')
    if nodes:
        out.append('<table class="grid" id="grid"><tr><th>from \\ to</th>'
                   + "".join(f'<th scope="col">{e(n)}</th>' for n in nodes) + "</tr>")
        for src in nodes:
            out.append(f'<tr><th scope="row">{e(src)}</th>'
                       + "".join(_cell(report, src, dst, first_group) for dst in nodes) + "</tr>")
        out.append("</table>")
    else:
        out.append('<p class="muted">No node pair was probed.</p>')

    out.append(f'<h2>Failures ({e(len(report["failures"]))}, in {e(len(groups))} groups)</h2>')
    if not groups:
        out.append('<p id="no-failures">None: every check passed.</p>')
    out.append('<div id="failures">')
    for g in groups:
        first = g["failures"][0]
        dst = first.get("dst_node") or first.get("dst")
        count = len(g["failures"])
        cls = "group" if first["required"] else "group optional"
        out.append(f'<div class="{cls}" id="{e(_anchor(*g["key"][:4]))}" data-check="{e(first["check"])}" '
                   f'data-src="{e(first["src_node"])}" data-dst="{e(dst)}">')
        tag = "" if first["required"] else " [not required]"
        out.append(f"<h3>{e(first['check'])} {e(first['src_node'])} → {e(dst)}: {e(first['reason'])}{e(tag)} "
                   f"({e(count)} {'probe' if count == 1 else 'probes'})</h3>")
        out.append(f'<p class="cause"><b>Likely:</b> {e(first["cause"])}</p>')
        if first["commands"]:
            out.append("<p><b>Inspect:</b></p><pre>" + "\n".join(e(c) for c in first["commands"]) + "</pre>")
        out.append('<table class="pairs"><tr><th>proto</th><th>pair</th><th>seen</th><th>expected</th>'
                   "<th>error</th></tr>")
        for f in g["failures"]:
            out.append(f'<tr class="failure"><td>{e(f["proto"])}</td><td>{e(f["pair"])}</td><td>{e(f.get("seen"))}</td>'
                       f'<td>{e(f.get("expected"))}</td><td>{e(f.get("error"))}</td></tr>')
        out.append("</table></div>")
    out.append("</div>")
    retried = report.get("passed_on_retry") or []
    out.append(f'<h2>Passed on retry ({e(len(retried))})</h2>')
    out.append('<p class="muted">Failed at the first attempt, passed when run once more with a timeout '
               'adapted to the measured load: counted as passed, but a sign of load or of a flaky path.</p>')
    if retried:
        out.append('<table class="retry" id="retried"><tr><th>check</th><th>proto</th><th>pair</th>'
                   '<th>first attempt</th></tr>')
        for r in retried:
            first = f"{r.get('first_reason')}: {r.get('first_error')}" if r.get("first_error") else r.get("first_reason")
            out.append(f'<tr class="passed-on-retry"><td>{e(r["check"])}</td><td>{e(r["proto"])}</td>'
                       f'<td>{e(r["pair"])}</td><td>{e(first)}</td></tr>')
        out.append("</table>")
    skipped = report.get("skipped") or []
    if skipped:
        out.append(f'<h2>Skipped ({e(len(skipped))})</h2>')
        out.append('<table id="skipped"><tr><th>check</th><th>pair</th><th>why</th></tr>')
        for r in skipped:
            out.append(f'<tr class="skipped"><td>{e(r["check"])}</td><td>{e(r["pair"])}</td>'
                       f'<td>{e(r.get("error"))}</td></tr>')
        out.append("</table>")
    out.append('<p class="muted">Written by flatnet.cluster.verify_report; the JSON report '
               "(flatnet_verify_json) holds every result.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
