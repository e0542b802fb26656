# SPDX-License-Identifier: GPL-3.0-or-later
"""The kernel runner's one quoting rule and one error type."""
from __future__ import annotations

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import kernel, names


class FakeModule:
    def __init__(self, results, bins=None):
        self.results = list(results)
        self.calls = []
        self.bins = bins if bins is not None else {"ip": "/sbin/ip", "bridge": "/sbin/bridge", "nft": "/usr/sbin/nft"}
        self.failed = None

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return self.bins.get(name)

    def run_command(self, cmd, data=None, binary_data=False, environ_update=None, check_rc=False):
        self.calls.append((cmd, data, environ_update))
        return self.results.pop(0)

    def fail_json(self, **kw):
        self.failed = kw
        raise SystemExit(1)


@pytest.mark.parametrize("word, quoted", [
    ("cni0", "cni0"),
    ("flatnet.1", "flatnet.1"),
    ("flatnet pod web", '"flatnet pod web"'),
    ("", '""'),
    ("10.244.0.0/24", "10.244.0.0/24"),
])
def test_batch_word_quotes_blanks(word, quoted):
    assert kernel.batch_word(word) == quoted


@pytest.mark.parametrize("word", [
    "pod\n", "a\nb", "tab\there", "x#y", 'say"hi"', "it's", "back\\slash", "nul\0", "cr\r", "bell\x07", "del\x7f",
])
def test_batch_word_refuses_what_a_line_cannot_carry(word):
    with pytest.raises(kernel.KernelError, match="cannot carry"):
        kernel.batch_word(word)


def test_a_bad_word_stops_the_whole_batch_before_anything_runs():
    mod = FakeModule([])
    runner = kernel.Runner(mod)
    with pytest.raises(kernel.KernelError):
        runner.batch("ip", [["link", "add", "ok", "type", "bridge"], ["link", "add", "bad#", "type", "bridge"]])
    assert mod.calls == []


def test_every_tool_runs_with_one_environment_and_one_error_type():
    mod = FakeModule([(0, "", ""), (0, "[]", ""), (1, "", "Error: bad\n")])
    runner = kernel.Runner(mod)
    runner.batch("bridge", [["fdb", "append", "00:00:00:00:00:00", "dev", "flatnet.1", "dst", "192.0.2.1"]])
    assert runner.json("nft", ["-j", "list", "ruleset"]) == []
    with pytest.raises(kernel.KernelError, match=r"^ip link show failed \(rc=1\): Error: bad$"):
        runner.run("ip", ["link", "show"])
    assert [c[0][0] for c in mod.calls] == ["/sbin/bridge", "/usr/sbin/nft", "/sbin/ip"]
    assert all(c[2] == {"LC_ALL": "C", "LANGUAGE": "C"} for c in mod.calls)
    assert mod.calls[0][1] == "fdb append 00:00:00:00:00:00 dev flatnet.1 dst 192.0.2.1\n"


@pytest.mark.parametrize("tool, package", [
    ("nft", "nftables"), ("ip", "iproute2"), ("bridge", "iproute2"), ("nsenter", "util-linux"),
    ("sysctl", "procps"), ("bird", "bird2"), ("birdc", "bird2"), ("systemctl", "systemd"),
])
def test_missing_tool_raises_naming_its_package(tool, package):
    mod = FakeModule([], bins={})
    with pytest.raises(kernel.ToolMissing, match=f"^{tool} was not found on this host: install the {package} package$"):
        kernel.Runner(mod).run(tool, ["x"])
    # The runner raises; only a module's main calls fail_json.
    assert mod.failed is None and mod.calls == []


def test_an_optional_tool_that_is_missing_is_none():
    assert kernel.Runner(FakeModule([], bins={})).bin("nft", required=False) is None


def test_net_runs_the_tool_through_nsenter():
    mod = FakeModule([(0, "", "")], bins={"ip": "/sbin/ip", "nsenter": "/usr/bin/nsenter"})
    kernel.Runner(mod).batch("ip", [["link", "set", "eth0", "up"]], net="/proc/7/ns/net")
    assert mod.calls[0][0] == ["/usr/bin/nsenter", "--net=/proc/7/ns/net", "/sbin/ip", "-batch", "-"]


def test_sysctl_reads_and_writes_in_a_namespace():
    mod = FakeModule([(0, "0\n", ""), (0, "", "")], bins={"sysctl": "/usr/sbin/sysctl", "nsenter": "/usr/bin/nsenter"})
    runner = kernel.Runner(mod)
    assert runner.sysctl("net.ipv4.ip_forward", net="/run/netns/r") == "0"
    assert runner.sysctl("net.ipv4.ip_forward", 1, net="/run/netns/r") is None
    assert [c[0] for c in mod.calls] == [
        ["/usr/bin/nsenter", "--net=/run/netns/r", "/usr/sbin/sysctl", "-n", "net.ipv4.ip_forward"],
        ["/usr/bin/nsenter", "--net=/run/netns/r", "/usr/sbin/sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
    ]


def test_sysctl_path_with_dotted_interface():
    assert kernel.sysctl_path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    assert kernel.sysctl_path("net.ipv6.conf.flatnet.1.accept_ra") == \
        "/proc/sys/net/ipv6/conf/flatnet.1/accept_ra"
    assert kernel.sysctl_path("net.ipv4.neigh.default.gc_thresh3") == "/proc/sys/net/ipv4/neigh/default/gc_thresh3"


def test_sysctl_of_an_interface_with_dots_in_a_namespace_is_named_by_path():
    mod = FakeModule([(0, "1\n", ""), (0, "", "")], bins={"sysctl": "/usr/sbin/sysctl", "nsenter": "/usr/bin/nsenter"})
    runner = kernel.Runner(mod)
    assert runner.sysctl("net.ipv6.conf.eth0.100.accept_ra", net="/run/netns/r") == "1"
    runner.sysctl("net.ipv6.conf.eth0.100.accept_ra", 2, net="/run/netns/r")
    assert [c[0][3:] for c in mod.calls] == [["-n", "net/ipv6/conf/eth0.100/accept_ra"],
                                             ["-q", "-w", "net/ipv6/conf/eth0.100/accept_ra=2"]]


def test_sysctl_of_this_host_is_its_proc_sys_file(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel, "PROC_SYS", str(tmp_path))
    conf = tmp_path / "net" / "ipv6" / "conf" / "eth0.100"
    conf.mkdir(parents=True)
    (conf / "accept_ra").write_text("1\n")
    mod = FakeModule([], bins={})  # no sysctl binary, no process
    runner = kernel.Runner(mod)
    assert runner.sysctl("net.ipv6.conf.eth0.100.accept_ra") == "1"
    assert runner.sysctl("net.ipv6.conf.eth0.100.accept_ra", 2) is None
    assert (conf / "accept_ra").read_text() == "2"
    assert mod.calls == []
    with pytest.raises(kernel.KernelError, match=r"sysctl net\.ipv6\.conf\.eth9\.accept_ra: .*eth9/accept_ra"):
        runner.sysctl("net.ipv6.conf.eth9.accept_ra", 0)


def test_a_plugin_by_path_gets_its_environment_on_top_of_the_one_environment():
    mod = FakeModule([(1, '{"code": 7}', "")], bins={})
    rc, out, _err = kernel.Runner(mod).run("bridge", [], data="{}", check=False,
                                           env={"CNI_COMMAND": "CHECK"}, exe="/usr/lib/cni/bridge")
    assert (rc, out) == (1, '{"code": 7}')
    cmd, data, env = mod.calls[0]
    assert cmd == ["/usr/lib/cni/bridge"] and data == "{}"
    assert env == {"LC_ALL": "C", "LANGUAGE": "C", "CNI_COMMAND": "CHECK"}


@pytest.mark.parametrize("name, ok", [
    ("cni0", True), ("flatnet.1", True), ("br_0-a", True), ("a" * 15, True),
    ("a" * 16, False), ("", False), ("-x", False), ("a b", False), ("a\n", False), ("cni0\n", False),
    ("a/b", False), ("a:b", False), ("all", False), ("default", False), (".", False), ("..", False),
    ("é", False), ('a"', False), (7, False),
])
def test_link_names(name, ok):
    assert (names.link_name_problem(name) is None) == ok


@pytest.mark.parametrize("name, ok", [
    ("web", True), ("node1-pod-1", True), ("a" * 63, True), ("a" * 64, False), ("web\n", False),
    ("Web", False), ("-web", False), ("web-", False), ("we_b", False), ("", False), (None, False),
])
def test_pod_names(name, ok):
    assert names.is_pod_name(name) == ok
