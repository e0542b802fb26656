# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the installed copy of flatnet.cluster against the plugins in the source tree.

Run by ``scripts/test`` (galaxy stage) with ANSIBLE_COLLECTIONS_PATH set to the place the
built tarball was installed to. For every plugin file under the source ``plugins/``:
``ansible-doc -l`` of its type lists it, its documentation comes from the installed copy,
and ``ansible-doc`` renders it as text without errors or warnings. An action plugin must
have a module of the same name that carries its documentation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys

COLLECTION = "flatnet.cluster"

# plugins/ folders that hold no user-facing plugins.
NOT_PLUGINS = {"module_utils", "plugin_utils", "doc_fragments", "action", "__pycache__"}
# Jinja plugin folders: one file may define several plugins, named by its class.
JINJA_CLASSES = {"filter": ("FilterModule", "filters"), "test": ("TestModule", "tests")}


def python_files(folder: str) -> list[str]:
    return sorted(
        name[:-3]
        for name in os.listdir(folder)
        if name.endswith(".py") and not name.startswith("_")
    )


def jinja_plugin_names(installed: str, kind: str, stems: list[str], problems: list[str]) -> list[str]:
    """Names a filter/test file provides, read from the installed copy."""
    class_name, method = JINJA_CLASSES[kind]
    if installed not in sys.path:
        sys.path.insert(0, installed)
    names = []
    for stem in stems:
        module_name = f"ansible_collections.flatnet.cluster.plugins.{kind}.{stem}"
        try:
            module = importlib.import_module(module_name)
            names.extend(getattr(getattr(module, class_name)(), method)())
        except Exception as exc:  # any failure here is a finding, not a crash
            problems.append(f"{kind} plugin file {stem}.py: cannot load {class_name}: {exc!r}")
    return sorted(names)


def expected_plugins(source: str, installed: str, problems: list[str]) -> dict[str, list[str]]:
    """Plugin type → short names that the source tree provides."""
    plugins_dir = os.path.join(source, "plugins")
    expected: dict[str, list[str]] = {}
    if not os.path.isdir(plugins_dir):
        return expected
    for folder in sorted(os.listdir(plugins_dir)):
        path = os.path.join(plugins_dir, folder)
        if folder in NOT_PLUGINS or not os.path.isdir(path):
            continue
        stems = python_files(path)
        if not stems:
            continue
        kind = "module" if folder == "modules" else folder
        if kind in JINJA_CLASSES:
            stems = jinja_plugin_names(installed, kind, stems, problems)
        expected[kind] = stems
    action_dir = os.path.join(plugins_dir, "action")
    if os.path.isdir(action_dir):
        modules = set(expected.get("module", []))
        for stem in python_files(action_dir):
            if stem not in modules:
                problems.append(
                    f"action plugin {stem}: no plugins/modules/{stem}.py carries its documentation"
                )
    return expected


def ansible_doc(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-doc", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def json_problems(kind: str, fqcns: list[str], installed: str) -> list[str]:
    """Each plugin has documentation, read from the installed copy."""
    docs = ansible_doc(["-t", kind, "-j", *fqcns])
    if docs.returncode != 0:
        return [f"ansible-doc -t {kind} -j {' '.join(fqcns)} failed: {docs.stderr.strip()}"]
    data = json.loads(docs.stdout or "{}")
    problems = []
    for fqcn in fqcns:
        doc = (data.get(fqcn) or {}).get("doc") or {}
        filename = doc.get("filename", "")
        if not doc:
            problems.append(f"{kind} {fqcn}: no documentation")
        elif not os.path.realpath(filename).startswith(os.path.realpath(installed) + os.sep):
            problems.append(f"{kind} {fqcn}: documentation read from {filename}, not the installed copy")
    return problems


def text_problems(kind: str, fqcns: list[str]) -> list[str]:
    """The text rendering parses the markup (O(), V(), RV() ...), which -j does not."""
    text = ansible_doc(["-t", kind, *fqcns])
    noise = [line for line in text.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    if text.returncode != 0 or noise:
        return [
            f"ansible-doc -t {kind} {' '.join(fqcns)} rendered with errors "
            f"(rc={text.returncode}): {' | '.join(noise) or text.stderr.strip()}"
        ]
    return [
        f"ansible-doc -t {kind} text output has no section for {fqcn}"
        for fqcn in fqcns
        if fqcn.upper() not in text.stdout.upper()
    ]


def check_kind(kind: str, names: list[str], installed: str, problems: list[str]) -> None:
    fqcns = [f"{COLLECTION}.{name}" for name in names]

    listing = ansible_doc(["-t", kind, "-l", COLLECTION, "-j"])
    if listing.returncode != 0:
        problems.append(f"ansible-doc -t {kind} -l failed: {listing.stderr.strip()}")
    else:
        listed = set(json.loads(listing.stdout or "{}"))
        for fqcn in fqcns:
            if fqcn not in listed:
                problems.append(f"ansible-doc -t {kind} -l {COLLECTION} does not list {fqcn}")

    # All at once is fast; when that fails, one by one says which plugin is at fault.
    found = text_problems(kind, fqcns)
    if found and len(fqcns) > 1:
        found = []
        for fqcn in fqcns:
            found.extend(text_problems(kind, [fqcn]))
    problems.extend(found)
    rendered = [fqcn for fqcn in fqcns if not any(f" {fqcn} " in f" {p} " for p in found)]
    if rendered:
        problems.extend(json_problems(kind, rendered, installed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, help="collection source tree (the checkout)")
    parser.add_argument("--installed", required=True, help="collections path the tarball was installed to")
    args = parser.parse_args()

    problems: list[str] = []
    expected = expected_plugins(args.source, args.installed, problems)
    for kind, names in sorted(expected.items()):
        if names:
            check_kind(kind, names, args.installed, problems)
            print(f"{kind}: {', '.join(names)}")
    if not expected:
        print("no plugins yet")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
