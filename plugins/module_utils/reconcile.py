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
import time


class Batch:
    """Lines for one ``TOOL [-n NETNS] -batch -`` process. ``net``: run it inside another
    process's network namespace instead (a lab node's PID, entered with nsenter)."""

    __slots__ = ("tool", "netns", "lines", "force", "net")

    def __init__(self, tool="ip", netns=None, lines=None, force=False, net=None):
        self.tool, self.netns, self.force, self.net = tool, netns, force, net
        self.lines = [] if lines is None else lines

    def __repr__(self):
        return f"Batch({self.tool!r}, {self.netns!r}, {self.lines!r})"


class Plan:
    """Ordered kernel work and its words. ``batch()`` declares the next batch and returns its
    line list; planners append to it. ``sysctl``: ``[(key, value)]`` written after the batches."""

    def __init__(self):
        self.batches, self.sysctl, self.actions, self.warnings = [], [], [], []

    def batch(self, tool="ip", netns=None, force=False, net=None):
        step = Batch(tool, netns, force=force, net=net)
        self.batches.append(step)
        return step.lines

    @property
    def changed(self):
        return bool(self.actions)


def apply(runner_or_ip, plan):
    """Run the plan's batches in order, then its sysctl writes, through the kernel runner
    (a ``kernel.Runner`` or an ``iproute2.IPRoute2``, whose runner is used). Empty batches
    start no process."""
    runner = getattr(runner_or_ip, "runner", runner_or_ip)
    for step in plan.batches:
        runner.batch(step.tool, step.lines, opts=["-n", step.netns] if step.netns else [],
                     force=step.force, net=step.net)
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
