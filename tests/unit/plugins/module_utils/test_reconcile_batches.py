# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""reconcile.apply's batch options: parallel fan-out, failures allowed, links that must vanish
(pure; a fake runner records what would run)."""

from __future__ import annotations

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import reconcile as r
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError


class FakeRunner:
    """Records calls; ``links`` answers each ``ip link show`` in turn (the last one stays);
    ``fail`` makes the batches with that first line raise."""

    def __init__(self, links=(), fail=None):
        self.calls, self.links, self.fail = [], [list(x) for x in links], fail

    def batch(self, tool, lines, opts=(), force=False, net=None):
        self.calls.append(("batch", tool, list(opts), force, [list(x) for x in lines]))
        if self.fail is not None and lines and list(lines[0]) == self.fail:
            raise KernelError("ip -force -batch - failed (rc=1): Cannot find device")

    def many(self, tool, jobs, parallel=32):
        self.calls.append(("many", tool, list(jobs.values())))
        return {key: None for key in jobs}

    def json(self, tool, argv, net=None):
        self.calls.append(("json", tool, list(argv)))
        names = self.links.pop(0) if len(self.links) > 1 else self.links[0]
        return [{"ifname": n} for n in names]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(r.time, "sleep", lambda _s: None)


def test_neighbouring_parallel_batches_start_together_in_their_namespaces():
    plan = r.Plan()
    plan.batch().append(["netns", "add", "web"])
    plan.batch(netns="web", parallel=True).append(["link", "set", "lo", "up"])
    plan.batch(netns="idle", parallel=True)  # empty: no process
    plan.batch(netns="db", parallel=True).append(["link", "set", "eth0", "up"])
    plan.batch().append(["neigh", "del", "10.244.0.7", "dev", "cni0"])
    plan.batch(netns="api", parallel=True).append(["link", "set", "lo", "up"])
    runner = FakeRunner()
    r.apply(runner, plan)
    assert runner.calls == [
        ("batch", "ip", [], False, [["netns", "add", "web"]]),
        ("many", "ip", [([["link", "set", "lo", "up"]], "web", [], False),
                        ([["link", "set", "eth0", "up"]], "db", [], False)]),
        ("batch", "ip", [], False, [["neigh", "del", "10.244.0.7", "dev", "cni0"]]),
        ("many", "ip", [([["link", "set", "lo", "up"]], "api", [], False)]),
    ]


def test_only_empty_parallel_batches_start_nothing():
    plan = r.Plan()
    plan.batch(netns="web", parallel=True)
    runner = FakeRunner()
    r.apply(runner, plan)
    assert runner.calls == []


def test_a_batch_that_may_fail_waits_for_its_links_to_vanish():
    plan = r.Plan()
    plan.batch(force=True, check=False, wait_gone=["vethaa", "vethbb"]).extend(
        [["link", "del", "vethaa"], ["link", "del", "vethbb"]])
    runner = FakeRunner(links=[["lo", "vethbb"], ["lo"]], fail=["link", "del", "vethaa"])
    r.apply(runner, plan)
    show = ("json", "ip", ["-json", "-details", "link", "show"])
    assert runner.calls == [
        ("batch", "ip", [], True, [["link", "del", "vethaa"], ["link", "del", "vethbb"]]),
        show, show]


def test_a_checked_batch_raises_and_waits_for_nothing():
    plan = r.Plan()
    plan.batch(wait_gone=["vethaa"]).append(["netns", "del", "web"])
    runner = FakeRunner(links=[["lo"]], fail=["netns", "del", "web"])
    with pytest.raises(KernelError):
        r.apply(runner, plan)
    assert runner.calls == [("batch", "ip", [], False, [["netns", "del", "web"]])]


def test_links_left_at_the_deadline_are_deleted(monkeypatch):
    clock = iter(range(100))
    monkeypatch.setattr(r.time, "monotonic", lambda: next(clock))
    plan = r.Plan()
    plan.batch(wait_gone=["vethbb", "vethaa"]).append(["netns", "del", "web"])
    runner = FakeRunner(links=[["lo", "vethaa", "vethbb"]])
    r.apply(runner, plan)
    assert runner.calls[-1] == ("batch", "ip", [], True,
                                [["link", "del", "vethaa"], ["link", "del", "vethbb"]])
    assert runner.calls[0] == ("batch", "ip", [], False, [["netns", "del", "web"]])


def test_waits_look_in_the_batch_namespace():
    runner = FakeRunner(links=[["lo"]])
    r.wait_links_gone(runner, ["vx"], netns="node1")
    assert runner.calls == [("json", "ip", ["-n", "node1", "-json", "-details", "link", "show"])]
