# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pieces of the flatnet.cluster benchmarks: run prefix, cleanup, throwaway nodes,
statistics and plain-text tables.

Everything a benchmark creates carries the run prefix and is registered here, so that an
exception, Ctrl-C or SIGTERM still ends every process it started (by PID) and removes every
temp dir it made.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

# "b" + 6 hex: short enough for interface names (15 chars) with a suffix.
PREFIX = "b" + secrets.token_hex(3)


class Skip(Exception):
    """A measurement cannot run here (a part of the collection or a tool is missing)."""


# --- cleanup -----------------------------------------------------------------------------
_cleanups: list = []


def on_cleanup(func, *args):
    """Register func(*args) to run at cleanup, last registered first. Returns a handle."""
    entry = (func, args)
    _cleanups.append(entry)
    return entry


def done(entry):
    """Run one registered cleanup now and forget it."""
    if entry in _cleanups:
        _cleanups.remove(entry)
        _run_one(entry)


def _run_one(entry):
    func, args = entry
    try:
        func(*args)
    except Exception as exc:  # a failing cleanup must not stop the others
        print(f"bench: cleanup {getattr(func, '__name__', func)} failed: {exc}", file=sys.stderr)


def cleanup_all():
    while _cleanups:
        _run_one(_cleanups.pop())


def _on_signal(signum, _frame):
    # Turn SIGTERM/SIGHUP into an exception so that finally blocks and atexit run.
    raise KeyboardInterrupt(f"signal {signum}")


def install_handlers():
    atexit.register(cleanup_all)
    # Also when started with SIGINT ignored (a background job of a script): Ctrl-C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def kill_group(proc, sig=signal.SIGKILL, wait=5.0):
    """Kill a process we started in its own session (start_new_session=True), by its PID."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass


def mkdtemp(tag):
    path = tempfile.mkdtemp(prefix=f"{PREFIX}-{tag}-")
    on_cleanup(shutil.rmtree, path, True)
    return path


def collection_root():
    """A temp dir whose ansible_collections/flatnet/cluster is this checkout (like the unit
    tests' conftest), for PYTHONPATH and ANSIBLE_COLLECTIONS_PATH."""
    parts = REPO_ROOT.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "flatnet"] and parts[-1] == "cluster":
        return os.sep.join(parts[:-3])
    root = mkdtemp("ac")
    os.makedirs(os.path.join(root, "ansible_collections", "flatnet"))
    os.symlink(REPO_ROOT, os.path.join(root, "ansible_collections", "flatnet", "cluster"))
    return root


# --- throwaway nodes -------------------------------------------------------------------
_NODE_INIT = r"""
set -e
mount -t tmpfs "$1-run" /run
umount -l /sys
mount -t sysfs "$1-sys" /sys
ip link set lo up
echo ready
exec sleep infinity
"""


class ThrowawayNode:
    """A node of its own: new net, mount, uts and pid namespaces with a tmpfs on /run.

    Killing its init (PID 1 inside) frees everything made in it: pods, links, processes.
    """

    def __init__(self, name):
        self.name = f"{PREFIX}-{name}"
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
             "--kill-child=SIGKILL", "--propagation", "private",
             "sh", "-c", _NODE_INIT, "node-init", self.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, text=True,
        )
        self._entry = on_cleanup(self.stop)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"throwaway node {self.name} did not start: {self.proc.stderr.read()}")
        children = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
        self.pid = int(children[0])

    def prefix(self):
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "-u", "-p", "--"]

    def stop(self):
        if getattr(self, "pid", None):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_group(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()
            self.proc.stderr.close()

    def close(self):
        done(self._entry)


def run(argv, timeout=600, check=True, input=None, **kwargs):  # noqa: A002 (as subprocess.run)
    """subprocess.run in its own session, killed by PID (its group) on timeout or Ctrl-C."""
    proc = subprocess.Popen(argv, start_new_session=True, text=True,
                            stdout=kwargs.pop("stdout", subprocess.PIPE),
                            stderr=kwargs.pop("stderr", subprocess.PIPE),
                            stdin=subprocess.PIPE if input is not None else kwargs.pop("stdin", subprocess.DEVNULL),
                            **kwargs)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except BaseException:
        kill_group(proc)
        raise
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed (rc={proc.returncode}): {(err or out or '').strip()[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def timed(argv, **kwargs):
    start = time.perf_counter()
    res = run(argv, **kwargs)
    return time.perf_counter() - start, res


# --- statistics and output -------------------------------------------------------------
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(title, headers, rows):
    """A plain-text table; returns it as a string (and the caller prints it)."""
    cells = [[str(h) for h in headers]] + [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)),
             "  ".join("-" * w for w in widths)]
    for row in cells[1:]:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def machine():
    def tool_version(argv):
        try:
            return run(argv, timeout=10, check=False).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return None

    return {
        "nproc": os.cpu_count(),
        "kernel": os.uname().release,
        "iproute2": tool_version(["ip", "-V"]),
        "iperf3": tool_version(["iperf3", "--version"]),
        "python": sys.version.split()[0],
        "loadavg": os.getloadavg(),
    }


def write_results(name, data):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(path + ".tmp", path)
    return path


def leftovers():
    """Names of ours still visible from here: netns and links in this namespace."""
    found = []
    if os.path.isdir("/run/netns"):
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(PREFIX)]
    try:
        links = json.loads(run(["ip", "-j", "link", "show"], timeout=30).stdout or "[]")
        found += [f"link {link['ifname']}" for link in links if link.get("ifname", "").startswith(PREFIX)]
    except (RuntimeError, ValueError):
        pass
    return found
