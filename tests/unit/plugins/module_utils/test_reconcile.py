# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one reconcile shape: Plan, apply, and the shared diffs (pure; apply with a fake runner)."""

from __future__ import annotations

from ansible_collections.flatnet.cluster.plugins.module_utils import reconcile as r


class FakeRunner:
    def __init__(self):
        self.calls = []

    def batch(self, tool, lines, opts=(), force=False, net=None):
        self.calls.append(("batch", tool, list(opts), force, [list(x) for x in lines]))

    def sysctl(self, key, value=None, net=None):
        self.calls.append(("sysctl", key, value))


class FakeIP:
    """An iproute2.IPRoute2 stand-in: apply goes through its runner."""

    def __init__(self):
        self.runner = FakeRunner()


def test_an_empty_plan_is_in_sync_and_changes_nothing():
    plan = r.Plan()
    assert not plan.changed
    assert plan.batches == [] and plan.sysctl == [] and plan.warnings == []


def test_batches_run_in_declared_order_then_sysctls():
    plan = r.Plan()
    pre = plan.batch("ip")
    fdb = plan.batch("bridge")
    pod = plan.batch("ip", netns="web", force=True)
    post = plan.batch("ip")
    post.append(["route", "replace", "10.244.2.0/24", "via", "192.168.60.12"])
    pre.append(["link", "set", "cni0", "up"])
    fdb.append(["fdb", "replace", "0e:00:00:00:00:13", "dev", "flatnet.1", "dst", "192.168.60.13"])
    pod.append(["link", "set", "lo", "up"])
    plan.sysctl.append(("net.ipv4.ip_forward", "1"))
    plan.actions.append("words")
    assert plan.changed
    ip = FakeIP()
    r.apply(ip, plan)
    assert ip.runner.calls == [
        ("batch", "ip", [], False, [["link", "set", "cni0", "up"]]),
        ("batch", "bridge", [], False,
         [["fdb", "replace", "0e:00:00:00:00:13", "dev", "flatnet.1", "dst", "192.168.60.13"]]),
        ("batch", "ip", ["-n", "web"], True, [["link", "set", "lo", "up"]]),
        ("batch", "ip", [], False, [["route", "replace", "10.244.2.0/24", "via", "192.168.60.12"]]),
        ("sysctl", "net.ipv4.ip_forward", "1"),
    ]


def test_apply_takes_a_runner_too():
    plan = r.Plan()
    plan.batch("ip").append(["link", "set", "lo", "up"])
    runner = FakeRunner()
    r.apply(runner, plan)
    assert runner.calls == [("batch", "ip", [], False, [["link", "set", "lo", "up"]])]


def test_address_diff_in_sync_is_no_action():
    have = ["10.244.0.2/24", "fd00:10:244::2/64"]
    assert r.addr_diff(have, list(have)) == ([], [])
    assert r.addr_lines(have, list(reversed(have)), "eth0") == []


def test_address_diff_deletes_first_then_adds_with_nodad_for_ipv6():
    have = ["10.244.0.9/24", "10.244.0.2/24"]
    want = ["10.244.0.2/24", "10.244.0.3/24", "fd00:10:244::3/64"]
    assert r.addr_diff(have, want) == (["10.244.0.9/24"], ["10.244.0.3/24", "fd00:10:244::3/64"])
    assert r.addr_lines(have, want, "eth0") == [
        ["addr", "del", "10.244.0.9/24", "dev", "eth0"],
        ["addr", "add", "10.244.0.3/24", "dev", "eth0"],
        ["addr", "add", "fd00:10:244::3/64", "dev", "eth0", "nodad"],
    ]
    assert r.addr_add_line("fd00:10:244::/128", "flatnet.1") == [
        "addr", "add", "fd00:10:244::/128", "dev", "flatnet.1", "nodad"]


def test_veth_pairing():
    host = {"ifindex": 7, "link_index": 2, "link_netnsid": 0}
    eth0 = {"ifindex": 2, "link_index": 7}
    assert r.paired(host, eth0)
    assert not r.paired(None, eth0) and not r.paired(host, None)
    assert not r.paired(dict(host, link_netnsid=None), eth0), "both ends in one namespace"
    assert not r.paired(host, dict(eth0, link_index=8)), "eth0 is paired with another veth"
    assert not r.paired(dict(host, link_index=3), eth0)


def test_wait_until_returns_at_once_when_it_holds(monkeypatch):
    def no_sleep(seconds):
        raise AssertionError(f"slept {seconds} s")

    monkeypatch.setattr(r.time, "sleep", no_sleep)
    assert r.wait_until(lambda: "ready", timeout=5) == "ready"


def test_wait_until_polls_until_true_or_deadline(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(r.time, "monotonic", lambda: clock[0])

    def sleep(s):
        clock[0] += s

    monkeypatch.setattr(r.time, "sleep", sleep)
    answers = iter([False, False, True])
    assert r.wait_until(lambda: next(answers), timeout=1.0, interval=0.1) is True
    assert abs(clock[0] - 0.2) < 1e-9
    clock[0] = 0.0
    calls = []
    assert r.wait_until(lambda: calls.append(1) or [], timeout=0.3, interval=0.1) == []
    assert len(calls) == 4, "checked once more at the deadline"
