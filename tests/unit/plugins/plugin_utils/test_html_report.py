# SPDX-License-Identifier: GPL-3.0-or-later
"""The self-contained HTML verification report: grid, failures, figures, escaping."""

from __future__ import annotations

from html.parser import HTMLParser

from ansible_collections.flatnet.cluster.plugins.plugin_utils import html_report
from ansible_collections.flatnet.cluster.plugins.plugin_utils import report as rpt

EVIL = '<script>alert("x")</script>&amp;'


def res(src_node, dst_node, ok=True, src="p1", dst="p2", check="pod-pod", **kw):
    return dict(check=check, proto=kw.pop("proto", "http"), src_node=src_node, src=f"{src_node}-{src}",
                src_ip="10.244.0.2", dst_node=dst_node, dst=f"{dst_node}-{dst}", dst_ip="10.244.1.2", ok=ok,
                reason=kw.pop("reason", "ok" if ok else "timeout"), seen=kw.pop("seen", None),
                expected=kw.pop("expected", None), error=kw.pop("error", None if ok else "timed out"), **kw)


class Page(HTMLParser):
    """Cells of the grid, failure rows, and every tag and attribute seen."""

    def __init__(self):
        super().__init__()
        self.cells, self.failure_rows, self.tags, self.attrs, self.text = [], 0, set(), [], []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.attrs.extend(attrs)
        if tag == "td" and "cell" in (a.get("class") or "").split():
            self.cells.append((a["data-src"], a["data-dst"], a["class"].split()[1]))
        if tag == "tr" and a.get("class") == "failure":
            self.failure_rows += 1
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    p = Page()
    p.feed(page)
    return p


def test_grid_has_one_cell_per_node_pair_coloured_by_result():
    results = [res(s, d) for s in ("n1", "n2", "n3") for d in ("n1", "n2", "n3")]
    results += [res("n1", "n2", ok=False), res("n2", "n3", ok=False, src="p9")]
    results = [r for r in results if not (r["src_node"] == "n2" and r["dst_node"] == "n3" and r["ok"])]
    page = parse(html_report.render(rpt.build(results)))
    assert len(page.cells) == 9
    kinds = {(s, d): k for s, d, k in page.cells}
    assert kinds[("n1", "n1")] == "pass" and kinds[("n1", "n2")] == "partial" and kinds[("n2", "n3")] == "fail"
    assert page.failure_rows == 2


def test_a_pair_never_probed_is_a_grey_cell():
    page = parse(html_report.render(rpt.build([res("a", "b"), res("b", "a")])))
    assert sorted(page.cells) == [("a", "a", "none"), ("a", "b", "pass"), ("b", "a", "pass"), ("b", "b", "none")]


def test_every_failed_pair_is_listed_with_error_cause_and_commands():
    results = [res("n1", "n2", ok=False, dst=f"p{i}", proto=proto) for i in range(8) for proto in ("http", "udp")]
    underlays = {"n1": "192.168.50.11", "n2": "192.168.50.12"}
    plan = {"backend": "host-gw",
            "nodes": {n: {"underlay": {"ip": ip, "network": "192.168.50.0/24"}} for n, ip in underlays.items()}}
    report = rpt.build(results, plan=plan)
    page = html_report.render(report, "t")
    assert parse(page).failure_rows == 16  # all of them, not the first five the text report shows
    for f in report["failures"]:
        assert html_report.e(f["pair"]) in page
    cause, commands = report["failures"][0]["cause"], report["failures"][0]["commands"]
    assert "host-gw path n1 -> n2" in cause
    assert html_report.e(cause) in page
    for c in commands:
        assert html_report.e(c) in page
    assert "timed out" in page and 'id="verdict">FAIL' in page


def test_run_figures_are_shown():
    report = rpt.build([res("n1", "n2"), res("n1", "n2", ok=False, check="mtu")], required_checks=["pod-pod"])
    report["nodes_without_results"] = ["n3"]
    page = html_report.render(report, plan={"backend": "auto", "mtu": 1450,
                                            "nodes": {"n1": {"pods": [1, 2]}, "n2": {"pods": [1]}}})
    text = " ".join(parse(page).text)
    assert "1 of 2 checks passed, 1 failed (1 of them in checks not required)" in text
    assert 'id="verdict">PASS' in page and "[not required]" in text
    for label in ("checks", "passed", "failed", "nodes", "pods", "backend", "pod MTU"):
        assert label in text
    assert "auto" in text and "1450" in text and "Nodes without probe results" in text


def test_everything_from_the_run_is_escaped():
    results = [res("n<1>", "n&2", ok=False, src=EVIL, error=EVIL, seen=EVIL, expected='"quoted"')]
    page = html_report.render(rpt.build(results), title=EVIL)
    parsed = parse(page)
    assert parsed.scripts == 0 and "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;" in page
    assert ("n<1>", "n&2", "fail") in parsed.cells  # attributes decode back to the names
    assert EVIL in "".join(parsed.text)  # and the text reads as written


def test_the_page_is_self_contained():
    page = html_report.render(rpt.build([res("n1", "n2", ok=False)]))
    parsed = parse(page)
    assert not parsed.tags & {"script", "link", "img", "iframe", "object", "embed"}
    for name, value in parsed.attrs:
        assert name != "src"
        if name == "href":
            assert value.startswith("#"), value
    assert "url(" not in page and "@import" not in page


def test_a_clean_run_says_so():
    page = html_report.render(rpt.build([res("n1", "n2")]))
    assert 'id="no-failures"' in page and 'id="verdict">PASS' in page


def test_passes_on_retry_and_skipped_checks_are_shown_apart():
    results = [res("n1", "n2"), res("n1", "n2", proto="udp", retried=True, first_reason="timeout",
                                    first_error=EVIL),
               res("n1", None, check="service", proto="nodeport", ok=False, skipped=True,
                   error="no place outside the cluster")]
    page = html_report.render(rpt.build(results))
    parsed = parse(page)
    text = " ".join(parsed.text)
    assert 'id="verdict">PASS' in page and "<script>" not in page
    assert "Passed on retry (1)" in text and page.count('class="passed-on-retry"') == 1
    assert "timeout: " + EVIL in "".join(parsed.text)
    assert "Skipped (1)" in text and "no place outside the cluster" in text
    assert "passed on retry" in text and parsed.failure_rows == 0


def test_a_run_without_retries_shows_zero():
    page = html_report.render(rpt.build([res("n1", "n2")]))
    assert "Passed on retry (0)" in " ".join(parse(page).text) and 'id="skipped"' not in page
