# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import iproute2, kernel, names, netns


class FakeModule:
    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.calls = []

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return "/sbin/" + name

    def run_command(self, cmd, data=None, binary_data=False, environ_update=None, check_rc=False):
        self.calls.append((cmd, data, environ_update))
        return self.outputs.pop(0)


def test_veth_name_is_stable_and_short():
    assert names.veth_name("node1-pod-1") == names.veth_name("node1-pod-1")
    assert names.veth_name("a").startswith("veth") and len(names.veth_name("a")) == 12


def test_decode_stream_of_batch_output():
    out = '[{"a":1}]\n[]\n[{"dst":"default"}]\n'
    assert kernel.decode_stream(out) == [[{"a": 1}], [], [{"dst": "default"}]]
    assert kernel.decode_stream("") == []


def test_batch_quotes_alias_and_uses_c_locale():
    mod = FakeModule([(0, "", "")])
    ip = iproute2.IPRoute2(mod)
    ip.batch([["link", "set", "veth1", "alias", "flatnet pod a"]], netns="a")
    cmd, data, env = mod.calls[0]
    assert cmd == ["/sbin/ip", "-n", "a", "-batch", "-"]
    assert data == 'link set veth1 alias "flatnet pod a"\n'
    assert env["LC_ALL"] == "C"


def test_json_batch_with_family_and_error():
    mod = FakeModule([(0, "[]\n[1]\n", ""), (1, "", "Cannot open network namespace")])
    ip = iproute2.IPRoute2(mod)
    assert ip.json_batch([["addr", "show"], ["route", "show"]], netns="p", family=6) == [[], [1]]
    assert mod.calls[0][0] == ["/sbin/ip", "-n", "p", "-6", "-json", "-batch", "-"]
    with pytest.raises(kernel.KernelError, match="Cannot open"):
        ip.json_batch([["addr", "show"]], netns="p")


def test_global_addrs_and_is_up():
    link = {"flags": ["UP"], "addr_info": [
        {"local": "10.0.0.2", "prefixlen": 24, "scope": "global"},
        {"local": "fe80::1", "prefixlen": 64, "scope": "link"}]}
    assert iproute2.global_addrs(link) == ["10.0.0.2/24"]
    assert iproute2.is_up(link) and not iproute2.is_up({"flags": ["LOWER_UP"]})


def test_many_names_a_missing_namespace(monkeypatch, tmp_path):
    monkeypatch.setattr(netns, "NETNS_DIR", str(tmp_path))
    ip = iproute2.IPRoute2(FakeModule([]))
    with pytest.raises(kernel.KernelError, match=r"^ip -n gone -json -batch - failed: no network namespace gone: No such file"):
        ip.many({"k": ([["addr", "show"]], "gone", None, True)})


def test_many_runs_in_the_current_namespace_without_netns():
    ip = iproute2.IPRoute2(FakeModule([]))
    ip.ip = "true"  # any program that reads nothing and exits 0
    assert ip.many({"k": ([["link", "show"]], None, None, False)}) == {"k": None}


def test_derived_macs_are_stable_local_unicast_and_apart():
    mac = names.derived_mac("flatnet-pod:web")
    assert mac == names.derived_mac("flatnet-pod:web") and mac.startswith("0a:")
    assert names.derived_mac("flatnet-vtep:192.168.50.11", "0e").startswith("0e:")
    assert names.derived_mac("flatnet-pod:db") != mac
    assert names.bridge_mac("cni0", ["10.244.0.1/24"]) == names.derived_mac("flatnet-bridge:cni0:10.244.0.1")
