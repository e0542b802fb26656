# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors
"""Readers of iproute2 state over the one kernel runner (:mod:`.kernel`).

State is read with ``ip -json``; changes are applied with ``ip -batch`` so that a node's
whole reconcile costs a handful of processes, whatever the number of pods or peers.
"""

from __future__ import annotations

import os

from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError, Runner, sysctl_path

NETNS_DIR = "/run/netns"


class IPRoute2:
    """``ip`` and ``bridge`` for one module run, through the shared :class:`Runner`."""

    def __init__(self, module, runner=None):
        self.module = module
        self.runner = runner or Runner(module)
        self.ip = self.runner.bin("ip")

    # --- running -----------------------------------------------------------------
    def run(self, argv, data=None, check=True):
        """Run ``ip ARGV``; return (rc, stdout, stderr). Raise KernelError when check and rc != 0."""
        return self.runner.run("ip", argv, data=data, check=check)

    def json(self, argv, netns=None):
        """Run ``ip [-n NETNS] -json ARGV`` and decode its output (``[]`` when empty)."""
        prefix = ["-n", netns] if netns else []
        return self.runner.json("ip", prefix + ["-json"] + list(argv))

    def batch(self, lines, netns=None, force=False):
        """Apply iproute2 commands (each an argument list) in one ``ip -batch -`` process.

        With force, iproute2 goes on after a failing line and the combined error is raised
        at the end; without it, it stops at the first failure.
        """
        self.runner.batch("ip", lines, opts=["-n", netns] if netns else [], force=force)

    def json_batch(self, lines, netns=None, family=None, details=False):
        """Run several ``-json`` show commands in one ``ip -batch`` process; one decoded
        result per line, in order. ``family`` (4 or 6) and ``details`` apply to every line:
        iproute2 takes them only as global options (route dumps default to IPv4)."""
        opts = (["-n", netns] if netns else []) + ([f"-{family}"] if family else []) + (
            ["-details"] if details else [])
        return self.runner.json_batch("ip", lines, opts=opts)

    def many(self, jobs, parallel=32):
        """Run independent ``ip [-F] [-json] -batch -`` jobs concurrently, each inside its
        pod's namespace: ``{key: (lines, netns, family, as_json)}`` -> ``{key: docs}``."""
        return self.runner.many("ip", {
            key: (lines, ns, [f"-{family}"] if family else [], as_json)
            for key, (lines, ns, family, as_json) in jobs.items()
        }, parallel=parallel)

    def many_each(self, jobs):
        """:meth:`many`, and when it fails (a namespace went away meanwhile) each job alone:
        ``(docs by key, keys of the jobs that failed)``."""
        try:
            return self.many(jobs), []
        except KernelError:
            docs, failed = {}, []
            for key, job in jobs.items():
                try:
                    docs.update(self.many({key: job}))
                except KernelError:
                    failed.append(key)
            return docs, failed

    def bridge_json(self, argv):
        """Decoded ``bridge -json ARGV``."""
        return self.runner.json("bridge", ["-json"] + list(argv))

    def bridge_batch(self, lines):
        """Apply ``bridge`` commands in one ``bridge -batch -`` process."""
        self.runner.batch("bridge", lines)

    # --- reading -----------------------------------------------------------------
    def links(self, netns=None):
        """Links by name: ``{name: link}`` with ``ip -json -details link``'s fields."""
        return {link["ifname"]: link for link in self.json(["-details", "link", "show"], netns)}

    def addrs(self, netns=None):
        """Addresses by link name: ``{name: ["10.0.0.1/24", ...]}`` (global scope only)."""
        return {link["ifname"]: global_addrs(link) for link in self.json(["addr", "show"], netns)}

    def routes(self, netns=None, family=4, table="main", proto=None):
        """Routes of one family in one table; optionally only those of protocol ``proto``."""
        argv = [f"-{family}", "route", "show", "table", table]
        if proto is not None:
            argv += ["proto", proto]
        return self.json(argv, netns)

    def netns_list(self):
        """Names of the named network namespaces of this host (``/run/netns``)."""
        try:
            return sorted(n for n in os.listdir(NETNS_DIR) if not n.startswith("."))
        except FileNotFoundError:
            return []


def is_up(link):
    """Administratively up (the UP flag; operstate stays DOWN on a bridge without ports)."""
    return "UP" in link.get("flags", [])


def global_addrs(link):
    """Global-scope addresses of one ``ip -json addr`` link entry, as ``ip/prefix``."""
    return [
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info", [])
        if a.get("scope") == "global"
    ]


def netns_inode(name):
    """Inode of a named netns file, or None when it is missing or dead (not a nsfs mount)."""
    path = os.path.join(NETNS_DIR, name)
    try:
        st = os.stat(path)
    except OSError:
        return None
    # A live named netns is an nsfs bind mount; a leftover plain file has st_dev of /run.
    try:
        if st.st_dev == os.stat(NETNS_DIR).st_dev:
            return None
    except OSError:
        return None
    return st.st_ino


def read_sysctl(name):
    """Value of a sysctl as a string, or None when it does not exist."""
    try:
        with open(sysctl_path(name), encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None
