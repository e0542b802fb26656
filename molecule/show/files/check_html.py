# SPDX-License-Identifier: GPL-3.0-or-later
"""Open the HTML verification report in a real headless browser and check what it shows.

usage: check_html.py HTML --nodes n1,n2,... [--fail SRC:DST]... [--pass] [--screenshot PNG]

Chromium (Debian package chromium) renders the page offline (no network: every host name
resolves to nothing), dumps the DOM it built and takes a screenshot. The DOM must hold the
node x node grid with exactly one cell per node pair; with --pass every cell passed, the
verdict is PASS and no failure is listed; each --fail pair is a failing cell whose link leads
to a listed failure group of that pair, with at least one failed probe row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from html.parser import HTMLParser


class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.groups, self.rows, self.verdict = {}, {}, 0, None
        self._in_verdict, self._group = False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "td" and "cell" in classes:
            key = (a["data-src"], a["data-dst"])
            if key in self.cells:
                raise SystemExit(f"two grid cells for {key}")
            self.cells[key] = classes[1]
        if tag == "div" and "group" in classes:
            self._group = a["id"]
            self.groups[a["id"]] = {"src": a["data-src"], "dst": a["data-dst"], "rows": 0}
        if tag == "tr" and "failure" in classes and self._group:
            self.groups[self._group]["rows"] += 1
            self.rows += 1
        if a.get("id") == "verdict":
            self._in_verdict = True

    def handle_data(self, data):
        if self._in_verdict:
            self.verdict = data.strip()
            self._in_verdict = False


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no chromium on this machine: install the Debian package chromium (scripts/setup does)")


def browse(page, screenshot):
    with tempfile.TemporaryDirectory(prefix="flatnet-chromium-") as profile:
        # Root needs --no-sandbox; the resolver rule keeps the page offline.
        base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,1600"]
        url = "file://" + os.path.abspath(page)
        dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
        if screenshot:
            subprocess.run(base + [f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return dom


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("html")
    ap.add_argument("--nodes", required=True)
    ap.add_argument("--fail", action="append", default=[])
    ap.add_argument("--pass", dest="all_pass", action="store_true")
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    nodes = args.nodes.split(",")
    dom = Dom()
    dom.feed(browse(args.html, args.screenshot))
    problems = []
    want = {(s, d) for s in nodes for d in nodes}
    if set(dom.cells) != want:
        problems.append(f"grid cells {sorted(dom.cells)} are not one per node pair of {nodes}")
    if args.all_pass:
        bad = sorted(k for k, v in dom.cells.items() if v != "pass")
        if bad or dom.verdict != "PASS" or dom.groups:
            problems.append(f"expected a clean report: failing cells {bad}, verdict {dom.verdict}, "
                            f"{len(dom.groups)} failure groups")
    for pair in args.fail:
        src, dst = pair.split(":")
        if dom.cells.get((src, dst)) not in ("fail", "partial"):
            problems.append(f"cell {src} -> {dst} is {dom.cells.get((src, dst))}, not failing")
        if not any(g["src"] == src and g["dst"] == dst and g["rows"] for g in dom.groups.values()):
            problems.append(f"no failure of {src} -> {dst} is listed")
    if args.fail and dom.verdict != "FAIL":
        problems.append(f"verdict {dom.verdict}, not FAIL")
    if args.screenshot:
        width, height = png_size(args.screenshot)
        if width < 100 or height < 100 or os.path.getsize(args.screenshot) < 5000:
            problems.append(f"screenshot {args.screenshot} looks empty ({width}x{height})")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{len(dom.cells)} cells, {sum(1 for v in dom.cells.values() if v != 'pass')} not passing, "
          f"{len(dom.groups)} failure groups, {dom.rows} failed probes, verdict {dom.verdict}")


if __name__ == "__main__":
    main()
