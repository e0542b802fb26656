# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one reconcile shape: a pure planner returns a ``Plan``, the module ``apply``-s it.

A ``Plan`` is ordered kernel work: batches (one ``TOOL [-n NETNS] -batch -`` each, run in
the order they were declared), sysctl writes, ``actions`` that say it in words for the
report, and ``warnings``. The shared diffs every planner needs live here too: addresses of
a link (with the IPv6 ``nodad`` rule), the veth-pair test and a poll-until-deadline.

Private module_utils of flatnet.cluster: the API may change without notice.
"""

from __future__ import annotations

import ipaddress
import itertools
import time

from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError


class Batch:
    """Lines for one ``TOOL [-n NETNS] -batch -`` process. ``net``: run it inside another
    process's network namespace instead (a lab node's PID, entered with nsenter).
    ``parallel``: runs side by side with the parallel batches next to it, each process
    started inside its named netns (the per-pod fan-out). ``check=False``: a failure is fine
    as long as ``wait_gone`` holds after it. ``wait_gone``: links (of the batch's netns) that
    must vanish after the batch; the ones left at the deadline are deleted."""

    __slots__ = ("tool", "netns", "lines", "force", "net", "parallel", "check", "wait_gone")

    def __init__(self, tool="ip", netns=None, lines=None, force=False, net=None,
                 parallel=False, check=True, wait_gone=None):
        self.tool, self.netns, self.force, self.net = tool, netns, force, net
        self.lines = [] if lines is None else lines
        self.parallel, self.check = parallel, check
        self.wait_gone = [] if wait_gone is None else wait_gone

    def __repr__(self):
        return f"Batch({self.tool!r}, {self.netns!r}, {self.lines!r})"


class Plan:
    """Ordered kernel work and its words. ``batch()`` declares the next batch and returns its
    line list; planners append to it. ``sysctl``: ``[(key, value)]`` written after the batches."""

    def __init__(self):
        self.batches, self.sysctl, self.actions, self.warnings = [], [], [], []

    def batch(self, tool="ip", netns=None, force=False, net=None, **more):
        """``more``: the Batch's other fields (``parallel``, ``check``, ``wait_gone``)."""
        step = Batch(tool, netns, force=force, net=net, **more)
        self.batches.append(step)
        return step.lines

    @property
    def changed(self):
        return bool(self.actions)


def apply(runner_or_ip, plan):
    """Run the plan's batches in order, then its sysctl writes, through the kernel runner
    (a ``kernel.Runner`` or an ``iproute2.IPRoute2``, whose runner is used). Empty batches
    start no process; neighbouring ``parallel`` batches of one tool start together."""
    runner = getattr(runner_or_ip, "runner", runner_or_ip)
    for fan_out, steps in itertools.groupby(plan.batches, key=lambda s: s.parallel and s.tool):
        if fan_out:
            run_side_by_side(runner, fan_out, list(steps))
        else:
            for step in steps:
                run_batch(runner, step)
    for key, value in plan.sysctl:
        runner.sysctl(key, value)


# --- the shared diffs ------------------------------------------------------------------


def addr_add_line(addr, dev):
    """``addr add ADDR dev DEV``; IPv6 with ``nodad``: duplicate address detection would keep
    the address tentative (unusable) for a second or more, and the plan owns the address."""
    line = ["addr", "add", addr, "dev", dev]
    if ipaddress.ip_interface(addr).version == 6:
        line.append("nodad")
    return line


def addr_diff(have, want):
    """``(delete, add)``: the addresses (``ADDR/PLEN`` strings) of ``have`` that are not
    wanted, then the wanted ones missing, each in its list's order. In sync: ``([], [])``."""
    return [a for a in have if a not in want], [a for a in want if a not in have]


def addr_lines(have, want, dev):
    """The ``addr del`` lines, then the ``addr add`` lines, that turn ``have`` into ``want``."""
    gone, new = addr_diff(have, want)
    return [["addr", "del", a, "dev", dev] for a in gone] + [addr_add_line(a, dev) for a in new]


def paired(host, peer):
    """Two ``ip -json -details`` links are the two ends of one veth pair (across namespaces:
    each end's ``link_index`` is the other's ``ifindex``, and the host end has a peer netns)."""
    return bool(
        host
        and peer
        and host.get("link_netnsid") is not None
        and peer.get("link_index") == host.get("ifindex")
        and host.get("link_index") == peer.get("ifindex")
    )


def wait_until(predicate, timeout, interval=0.05):
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return its last value
    (checked once more at the deadline, so a slow last step still counts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- apply's parts: one batch, parallel batches, links that must vanish ------------------


def run_batch(runner, step):
    """One batch in its own process, then its ``wait_gone``."""
    opts = ["-n", step.netns] if step.netns else []
    try:
        runner.batch(step.tool, step.lines, opts=opts, force=step.force, net=step.net)
    except KernelError:
        if step.check:
            raise
    if step.wait_gone:
        wait_links_gone(runner, step.wait_gone, step.netns, step.net)


def run_side_by_side(runner, tool, steps):
    """Parallel batches (always checked) in one ``runner.many``, then their waits."""
    jobs = {i: (step.lines, step.netns, [], False) for i, step in enumerate(steps) if step.lines}
    if jobs:
        runner.many(tool, jobs)
    for step in steps:
        if step.wait_gone:
            wait_links_gone(runner, step.wait_gone, step.netns, step.net)


def wait_links_gone(runner, names, netns=None, net=None, timeout=3.0):
    """Wait until the links ``names`` are gone (``ip netns del`` returns before the kernel
    drops the namespace's veths), then delete the ones left."""
    opts = ["-n", netns] if netns else []
    left = set(names)

    def gone():
        left.intersection_update(
            link["ifname"] for link in runner.json("ip", opts + ["-json", "-details", "link", "show"], net=net))
        return not left

    if not wait_until(gone, timeout):
        runner.batch("ip", [["link", "del", n] for n in sorted(left)], opts=opts, force=True, net=net)
