# SPDX-License-Identifier: GPL-3.0-or-later
"""The firewall definition, drift detection and module, with recorded ``nft -j`` outputs."""

from __future__ import annotations

import copy
import json
from unittest import mock

import pytest

from ansible.module_utils import basic

from ansible_collections.flatnet.cluster.plugins.module_utils import firewall_nft, nft_table
from ansible_collections.flatnet.cluster.tests.unit.compat import patch_module_args
from ansible_collections.flatnet.cluster.plugins.modules import firewall as firewall_module

# Recorded: nft -j list table inet flatnet (nftables 1.0.6), for cluster 10.244.0.0/16 without vxlan.
LIVE = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "flatnet", "handle": 3}},
    {"set": {"family": "inet", "name": "cluster4", "table": "flatnet", "type": "ipv4_addr", "handle": 4,
             "flags": ["interval"], "elem": [{"prefix": {"addr": "10.244.0.0", "len": 16}}]}},
    {"chain": {"family": "inet", "table": "flatnet", "name": "forward", "handle": 1, "type": "filter",
               "hook": "forward", "prio": 0, "policy": "accept"}},
    {"rule": {"family": "inet", "table": "flatnet", "chain": "forward", "handle": 6, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@cluster4"}},
        {"accept": None}]}},
]}
# Recorded: nft -j list chains on a host where iptables-nft set the FORWARD policy to DROP.
CHAINS = {"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"chain": {"family": "inet", "table": "flatnet", "name": "forward", "handle": 1, "type": "filter",
               "hook": "forward", "prio": 0, "policy": "accept"}},
    {"chain": {"family": "inet", "table": "flatnet", "name": "input", "handle": 3, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}},
    {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter",
               "hook": "forward", "prio": 0, "policy": "drop"}},
    {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 7}},
]}


def test_render_full_definition():
    text = firewall_nft.render(["10.244.0.0/16", "fd00:10:244::/56"], True, 8472,
                               ["192.168.50.12", "192.168.50.11", "fd00::1", "192.168.50.11"], "cni0")
    assert text == """table inet flatnet {
\tset cluster4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.244.0.0/16 }
\t}

\tset cluster6 {
\t\ttype ipv6_addr
\t\tflags interval
\t\telements = { fd00:10:244::/56 }
\t}

\tset nodes4 {
\t\ttype ipv4_addr
\t\telements = { 192.168.50.11, 192.168.50.12 }
\t}

\tset nodes6 {
\t\ttype ipv6_addr
\t\telements = { fd00::1 }
\t}

\tchain prerouting {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 meta mark & 0x8000 == 0 notrack
\t\tip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244::/56 meta mark & 0x8000 == 0 notrack
\t\tudp dport 8472 notrack
\t}

\tchain output {
\t\ttype filter hook output priority raw; policy accept;
\t\tudp dport 8472 notrack
\t}

\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
\t\tip6 saddr fd00:10:244::/56 ip6 daddr != fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random
\t}

\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tudp dport 8472 ip saddr != @nodes4 drop
\t\tudp dport 8472 ip6 saddr != @nodes6 drop
\t}
}
"""


def test_render_minimal_has_no_drop_and_no_nat():
    text = firewall_nft.render(["10.244.0.0/16"], masquerade=False, vxlan_port=None)
    assert "drop" not in text and "postrouting" not in text and "input" not in text and "cluster6" not in text


def test_render_has_no_chain_without_an_effect():
    # Every base chain costs every packet a hook: none that only accepts (the old forward
    # chain), no notrack without conntrack, no guard when asked not to.
    text = firewall_nft.render(["10.244.0.0/16"], True, 8472, ["192.168.50.11"], "cni0")
    assert "forward" not in text and "cni0" not in text
    bare = firewall_nft.render(["10.244.0.0/16"], False, 8472, ["192.168.50.11"], notrack=False, vxlan_guard=False)
    assert "chain" not in bare and "nodes4" not in bare and "set cluster4" in bare
    guard_only = firewall_nft.render(["10.244.0.0/16"], False, 8472, ["192.168.50.11"], notrack=False)
    assert [line.strip() for line in guard_only.splitlines() if line.strip().startswith("chain")] == ["chain input {"]


def test_render_uses_the_set_only_for_several_cidrs():
    one = firewall_nft.render(["10.244.0.0/16"], True, None)
    assert "ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 meta mark" in one and "@cluster4" not in one
    two = firewall_nft.render(["10.244.0.0/16", "10.99.0.0/16"], True, None)
    assert "ip saddr @cluster4 ip daddr @cluster4 meta mark" in two
    assert "ip saddr @cluster4 ip daddr != @cluster4 ip daddr != 224.0.0.0/4 masquerade" in two


def test_render_is_order_independent_and_rejects_nothing_to_do():
    a = firewall_nft.render(["10.244.0.0/16"], True, 8472, ["192.168.50.12", "192.168.50.11"])
    b = firewall_nft.render(["10.244.0.0/16"], True, 8472, ["192.168.50.11", "192.168.50.12"])
    assert a == b
    with pytest.raises(ValueError):
        firewall_nft.render([], True, None)


def test_transaction_is_create_delete_define():
    assert firewall_nft.transaction("X\n") == "table inet flatnet {}\ndelete table inet flatnet\nX\n"


def test_canonical_ignores_handles_and_metainfo():
    other = copy.deepcopy(LIVE)
    other["nftables"][0]["metainfo"]["version"] = "1.0.9"
    for item in other["nftables"][1:]:
        next(iter(item.values()))["handle"] += 40
    assert nft_table.digest(nft_table.canonical(other)) == nft_table.digest(nft_table.canonical(LIVE))
    edited = copy.deepcopy(LIVE)
    edited["nftables"][-1]["rule"]["expr"][-1] = {"drop": None}
    assert nft_table.digest(nft_table.canonical(edited)) != nft_table.digest(nft_table.canonical(LIVE))


@pytest.mark.parametrize("record,desired,live,expected", [
    ({"desired": "d", "live": "l"}, "d", "l", False),   # unchanged: nothing to do
    ({"desired": "d", "live": "l"}, "d", "x", True),    # rule edited by hand
    ({"desired": "d", "live": "l"}, "d", None, True),   # table deleted
    ({"desired": "d", "live": "l"}, "e", "l", True),    # new definition
    ({}, "d", "l", True),                               # never recorded
])
def test_needs_apply(record, desired, live, expected):
    assert nft_table.needs_apply(record, desired, live) is expected


def test_forward_drop_chains_of_other_tables_only():
    assert firewall_nft.forward_drop_chains(CHAINS) == ["ip filter FORWARD"]
    assert firewall_nft.forward_drop_chains({}) == []


# --- the module, with nft answering from the recordings -----------------------------------
# table=None means "no flatnet table", so the default needs its own marker.
_RECORDED = object()


class FakeNft:
    def __init__(self, table=_RECORDED, chains=None):
        self.table = copy.deepcopy(LIVE) if table is _RECORDED else table
        self.chains = chains or {"nftables": []}
        self.writes = []

    def __call__(self, _module, cmd, data=None, **_kw):
        argv = tuple(cmd[1:])
        if argv == ("-f", "-"):
            self.writes.append(data)
            return 0, "", ""
        if argv == ("-j", "list", "table", "inet", "flatnet"):
            return (0, json.dumps(self.table), "") if self.table else (1, "", "No such file or directory")
        if argv == ("list", "table", "inet", "flatnet"):
            return (0, "table inet flatnet {\n}\n", "") if self.table else (1, "", "No such file")
        if argv == ("-j", "list", "chains"):
            return 0, json.dumps(self.chains), ""
        raise AssertionError(f"unexpected nft call {argv}")


ARGS = {"cluster_cidrs": ["10.244.0.0/16"], "masquerade": False, "vxlan_port": None, "state_dir": "/nonexistent"}


def run_module(args, nft, record=None, check_mode=False, nft_path="/usr/sbin/nft"):
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=True)
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "run_command", autospec=True, side_effect=nft), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path", return_value=nft_path), \
            mock.patch.object(firewall_module.flatnet_state, "load", return_value=record or {}), \
            mock.patch.object(firewall_module.flatnet_state, "remove"), \
            mock.patch.object(firewall_module.flatnet_state, "save") as save:
        with pytest.raises(SystemExit):
            firewall_module.main()
    return save


def recorded_for(args, table=None):
    if table is None:
        table = copy.deepcopy(LIVE)
    definition = firewall_nft.render(args["cluster_cidrs"], args["masquerade"], args["vxlan_port"])
    return {"desired": nft_table.digest(definition), "live": nft_table.digest(nft_table.canonical(table))}


def test_module_unchanged_when_record_and_live_match(capsys):
    nft = FakeNft()
    save = run_module(ARGS, nft, record=recorded_for(ARGS))
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is False and out["actions"] == [] and nft.writes == [] and not save.called


def test_module_rewrites_edited_table(capsys):
    edited = copy.deepcopy(LIVE)
    edited["nftables"][-1]["rule"]["expr"][-1] = {"drop": None}
    nft = FakeNft(table=edited)
    save = run_module(ARGS, nft, record=recorded_for(ARGS))
    out = json.loads(capsys.readouterr().out)
    assert out["actions"] == ["write table inet flatnet (live table differs from the recorded one)"]
    assert nft.writes[0].startswith("table inet flatnet {}\ndelete table inet flatnet\ntable inet flatnet {\n")
    assert save.called


def test_module_check_mode_and_forward_drop_warning(capsys):
    nft = FakeNft(table=None, chains=CHAINS)
    save = run_module(ARGS, nft, check_mode=True)
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is True and nft.writes == [] and not save.called
    assert out["forward_drop_chains"] == ["ip filter FORWARD"]
    assert "DOCKER-USER" in json.dumps(out["warnings"])
    assert out["diff"]["before"] == "" and out["diff"]["after"] == out["ruleset"]


def test_module_absent(capsys):
    nft = FakeNft()
    run_module({"state": "absent", "state_dir": "/nonexistent"}, nft)
    out = json.loads(capsys.readouterr().out)
    assert out["actions"] == ["delete table inet flatnet"]
    assert nft.writes == ["table inet flatnet {}\ndelete table inet flatnet\n"]
    nft = FakeNft(table=None)
    run_module({"state": "absent", "state_dir": "/nonexistent"}, nft)
    assert json.loads(capsys.readouterr().out)["changed"] is False and nft.writes == []


def test_module_without_nft_says_what_to_do(capsys):
    run_module(ARGS, FakeNft(), nft_path=None)
    out = json.loads(capsys.readouterr().out)
    assert out["failed"] is True
    assert "install the nftables package" in out["msg"] and "flatnet_firewall: false" in out["msg"]
