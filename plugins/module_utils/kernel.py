# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors
"""The one runner through which flatnet.cluster runs the host's network tools: ``ip``,
``bridge``, ``nft``, ``sysctl``, ``nsenter``, ``bird``, ``birdc``, ``systemctl`` and the CNI
plugins.

One environment (``LC_ALL=C``), argument lists only (never a shell), one error type
(:class:`KernelError`) and one quoting rule for batch input: a word that a batch line
cannot carry is refused, never escaped (iproute2 knows no escapes). Modules never build
batch text or call ``run_command`` for these tools themselves. A missing tool raises
:class:`ToolMissing`, naming the Debian package; only a module's ``main`` turns any of
these errors into ``fail_json``.
"""

from __future__ import annotations

import json
import os
import subprocess

from ansible_collections.flatnet.cluster.plugins.module_utils.names import batch_word_problem
from ansible_collections.flatnet.cluster.plugins.module_utils.netns import NoNetns, in_netns

ENV = {"LC_ALL": "C", "LANGUAGE": "C"}

# Where each tool comes from, for the error when it is missing.
PACKAGES = {
    "ip": "iproute2", "bridge": "iproute2", "nft": "nftables",
    "nsenter": "util-linux", "unshare": "util-linux", "sysctl": "procps",
    "bird": "bird2", "birdc": "bird2", "systemctl": "systemd",
}
SBIN = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]


class KernelError(Exception):
    """A kernel tool failed or was handed input it cannot take; the message says which."""


class ToolMissing(KernelError):
    """A tool is not installed on this host; the message names its Debian package."""

    def __init__(self, tool, package=None, why=""):
        self.tool, self.package = tool, package or PACKAGES.get(tool, tool)
        super().__init__(f"{tool} was not found on this host: install the {self.package} package{why}")


def batch_word(word) -> str:
    """One word of a batch line: double-quoted when it holds spaces; refused (KernelError)
    when it holds a character no batch line can carry."""
    text = str(word)
    problem = batch_word_problem(text)
    if problem:
        raise KernelError(f"{text!r} {problem}")
    if text == "" or " " in text:
        return f'"{text}"'
    return text


def batch_text(lines) -> str:
    """Batch input from argument lists, one command a line."""
    return "".join(" ".join(batch_word(w) for w in line) + "\n" for line in lines)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode_stream(text):
    """Decode concatenated JSON documents (what ``ip -json -batch`` prints)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    docs, pos, end = [], 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


PROC_SYS = "/proc/sys"


def sysctl_parts(name):
    """The path components of a dotted sysctl name. An interface part may itself hold dots
    (``net.ipv6.conf.eth0.100.accept_ra``, ``net.ipv4.conf.flatnet.1.rp_filter``): it stays
    one component, where splitting at every dot (what ``sysctl`` does) names no file."""
    parts = name.split(".")
    if len(parts) > 5 and parts[0] == "net" and parts[2] in ("conf", "neigh"):
        parts = parts[:3] + [".".join(parts[3:-1]), parts[-1]]
    return parts


def sysctl_path(name):
    """The /proc/sys file of a dotted sysctl name (see :func:`sysctl_parts`)."""
    return "/".join([PROC_SYS] + sysctl_parts(name))


class Runner:
    """Runs the host's network tools for one module run."""

    def __init__(self, module):
        self.module = module
        self._bins = {}

    def bin(self, tool, required=True, why=""):
        """Path of ``tool`` on the managed host (None when missing and not required);
        a missing required one raises :class:`ToolMissing` naming its package (``why``
        is added to the message: what the tool is needed for)."""
        if tool not in self._bins:
            self._bins[tool] = self.module.get_bin_path(tool, required=False, opt_dirs=SBIN)
        if not self._bins[tool] and required:
            raise ToolMissing(tool, why=why)
        return self._bins[tool]

    def run(self, tool, argv, data=None, check=True, net=None, env=None, exe=None):
        """Run ``TOOL ARGV``; return (rc, stdout, stderr). Raise KernelError when check and
        rc != 0.

        ``net``: a network namespace file (``/proc/PID/ns/net``, ``/run/netns/NAME``) to run
        the tool in, through ``nsenter``. ``env``: variables added to the one environment.
        ``exe``: the tool's path when it is not on PATH (a CNI plugin); ``tool`` names it.
        """
        cmd = [exe or self.bin(tool)] + [str(a) for a in argv]
        if net:
            cmd = [self.bin("nsenter"), f"--net={net}"] + cmd
        rc, out, err = self.module.run_command(
            cmd, data=data, binary_data=True, environ_update=dict(ENV, **(env or {})), check_rc=False
        )
        if check and rc != 0:
            shown = " ".join([tool] + [str(a) for a in argv])
            raise KernelError(f"{shown} failed (rc={rc}): {_text(err).strip() or _text(out).strip()}")
        return rc, out, err

    def json(self, tool, argv, net=None):
        """Decoded output of a JSON show command (``[]`` when it printed nothing)."""
        _rc, out, _err = self.run(tool, argv, net=net)
        out = out.strip()
        return json.loads(out) if out else []

    def sysctl(self, key, value=None, net=None):
        """Read a sysctl (``value`` None) or write it, in this host's or ``net``'s namespace;
        return the value read, or None after a write. This host's are its /proc/sys files
        (no process, no procps); another namespace's go through ``sysctl`` under nsenter,
        named by path when an interface part holds dots (``sysctl`` reads ``a/b.c/d`` as
        three components, ``a.b.c.d`` as four)."""
        if net is None:
            path = sysctl_path(key)
            try:
                if value is None:
                    with open(path, encoding="ascii") as f:
                        return f.read().strip()
                with open(path, "w", encoding="ascii") as f:
                    f.write(str(value))
            except OSError as exc:
                raise KernelError(f"sysctl {key}: {exc.strerror or exc} ({path})") from None
            return None
        parts = sysctl_parts(key)
        word = "/".join(parts) if any("." in p for p in parts) else key
        if value is None:
            return _text(self.run("sysctl", ["-n", word], net=net)[1]).strip()
        self.run("sysctl", ["-q", "-w", f"{word}={value}"], net=net)
        return None

    def batch(self, tool, lines, opts=(), force=False, net=None):
        """Apply commands (each an argument list) in one ``TOOL [OPTS] [-force] -batch -``.

        With force the tool goes on after a failing line and the combined error is raised
        at the end; without it, it stops at the first failure.
        """
        if not lines:
            return
        text = batch_text(lines)
        argv = list(opts) + (["-force"] if force else []) + ["-batch", "-"]
        self.run(tool, argv, data=text, net=net)

    def json_batch(self, tool, lines, opts=(), net=None):
        """Several JSON show commands in one batch process; one decoded result per line."""
        if not lines:
            return []
        _rc, out, _err = self.run(tool, list(opts) + ["-json", "-batch", "-"],
                                  data=batch_text(lines), net=net)
        return decode_stream(out)

    def many(self, tool, jobs, parallel=32):
        """Run independent batch jobs concurrently, each started inside its own named netns.

        ``jobs``: ``{key: (lines, netns, opts, as_json)}``. Returns ``{key: decoded docs}``
        (``None`` for non-json jobs); raises KernelError naming every failed job. This is the
        per-pod fan-out: AnsibleModule.run_command costs ~15 ms a call, which one process
        per pod cannot afford at 100 pods. Each process starts inside its namespace (setns
        before the spawn) rather than with ``ip -n``, which remounts /sys every time.
        """
        path = self.bin(tool)
        env = dict(os.environ, **ENV)
        # Refuse bad words before anything runs, so no job is half-applied by another's fault.
        texts = {key: batch_text(lines).encode("utf-8") for key, (lines, _ns, _o, _j) in jobs.items()}
        results, errors = {}, []
        items = list(jobs.items())
        for start in range(0, len(items), parallel):
            running = []
            for key, (_lines, ns, opts, as_json) in items[start:start + parallel]:
                argv = list(opts or ()) + (["-json"] if as_json else []) + ["-batch", "-"]
                label = " ".join([tool] + (["-n", ns] if ns else []) + argv)
                try:
                    # Popen, not run_command (ansible-core 2.21 sanity asks for it): run_command
                    # waits, and these batches run side by side.
                    with in_netns(ns):
                        proc = subprocess.Popen([path] + argv, stdin=subprocess.PIPE,  # pylint: disable=consider-using-with,ansible-bad-function
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                env=env, close_fds=True)
                except NoNetns as exc:
                    errors.append(f"{label} failed: {exc.strerror}")
                    continue
                running.append((key, label, proc, as_json))
            for key, label, proc, as_json in running:
                out, err = proc.communicate(texts[key])
                if proc.returncode != 0:
                    errors.append(f"{label} failed (rc={proc.returncode}): "
                                  f"{err.decode('utf-8', 'replace').strip()}")
                    continue
                results[key] = decode_stream(out) if as_json else None
        if errors:
            raise KernelError("; ".join(errors))
        return results
