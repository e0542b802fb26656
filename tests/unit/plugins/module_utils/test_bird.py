# SPDX-License-Identifier: GPL-3.0-or-later
"""BIRD 2 configuration rendering and birdc output parsing (module_utils/bird.py); the rendered
text is also parsed by the real ``bird -p`` when it is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import bird


def view(role="mesh", **kw):
    v = {"router_id": "192.168.50.11", "asn": 64512, "hold_time": 9, "keepalive_time": 3,
         "pod_cidrs": ["10.244.0.0/24"], "cluster_cidrs": ["10.244.0.0/16"], "role": role,
         "rr_cluster_id": "192.168.50.11" if role == "reflector" else None, "underlay_network": "192.168.50.0/24",
         "sessions": [{"name": "node2", "address": "192.168.50.12", "rr_client": role == "reflector"},
                      {"name": "node3", "address": "192.168.50.13", "rr_client": False}],
         "accept": [{"node": "node2", "prefix": "10.244.1.0/24", "next_hop": "192.168.50.12"},
                    {"node": "node3", "prefix": "10.244.2.0/24", "next_hop": "192.168.50.13"},
                    {"node": "x", "prefix": "10.9.0.0/24", "next_hop": "192.168.50.14"}]}
    v.update(kw)
    return v


def test_mesh_config():
    text = bird.render(view())
    assert text.startswith(bird.HEADER)
    assert "router id 192.168.50.11;" in text
    assert "route 10.244.0.0/24 blackhole;" in text
    assert "export filter { if source = RTS_BGP then accept; reject; };" in text
    assert "if ! (net ~ [ 10.244.0.0/16+ ]) then reject;" in text
    assert "if net = 10.244.1.0/24 && bgp_next_hop = 192.168.50.12 then accept;" in text
    assert "10.9.0.0/24" not in text  # outside the cluster: never accepted
    assert "hold time 9;" in text and "keepalive time 3;" in text
    assert "protocol bgp peer_192_168_50_12 from flatnet_peer {" in text
    assert "rr client" not in text and "RTS_BGP then accept;  # reflected" not in text
    assert text.count("protocol bgp ") == 3  # two sessions and the dynamic one for new nodes
    assert "neighbor range 192.168.50.0/24 internal;" in text
    # A node joined later: one free block from this subnet; never a known node's (or part of it).
    assert "if bgp_next_hop ~ [ 192.168.50.12, 192.168.50.13 ] then reject;" in text
    assert "if net ~ [ 10.244.1.0/24+, 10.244.2.0/24+, 10.244.0.0/24+ ] then reject;" in text
    assert "if net.len = 24 && bgp_next_hop ~ 192.168.50.0/24 then accept;" in text


def test_reflector_config():
    text = bird.render(view("reflector"))
    assert text.count("rr client;") == 1 and "rr cluster id 192.168.50.11;" in text
    assert "if source = RTS_BGP then accept;  # reflected to the clients" in text
    assert "neighbor range" not in text  # a reflector only talks to the nodes of its plan


@pytest.mark.parametrize("kw,match", [
    ({"router_id": "fd00::1"}, "router_id"),
    ({"pod_cidrs": ["10.245.0.0/24"]}, "outside the cluster"),
    ({"pod_cidrs": ["10.244.0.1/24"]}, "pod CIDR"),
    ({"cluster_cidrs": []}, "no cluster CIDR"),
    ({"sessions": [{"name": "n", "address": "x; }"}]}, "session address"),
    ({"accept": [{"prefix": "10.244.1.0/24", "next_hop": "1.2.3.4; reject"}]}, "next hop"),
])
def test_bad_views_are_refused(kw, match):
    with pytest.raises(bird.BirdError, match=match):
        bird.render(view(**kw))


def test_description_cannot_escape_the_string():
    text = bird.render(view(sessions=[{"name": 'evil"; }', "address": "192.168.50.12"}]))
    assert 'description "evil____";' in text


@pytest.mark.skipif(not shutil.which("bird"), reason="bird (Debian bird2) is not installed")
@pytest.mark.parametrize("role", ["mesh", "reflector", "client"])
def test_real_bird_parses_it(tmp_path, role):
    path = tmp_path / "bird.conf"
    path.write_text(bird.render(view(role)))
    res = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_parse_protocols_and_routes():
    protos = bird.parse_protocols(
        "BIRD 2.0.12 ready.\n"
        "Name       Proto      Table      State  Since         Info\n"
        "device1    Device     ---        up     21:31:32.009  \n"
        "peer_192_168_50_12 BGP        ---        up     21:31:32.766  Established   \n"
        "peer_192_168_50_13 BGP        ---        start  21:31:32.819  Active        Socket: Connection refused\n")
    assert protos["peer_192_168_50_12"]["info"] == "Established"
    assert protos["peer_192_168_50_13"]["info"].startswith("Active")
    routes = bird.parse_routes(
        "BIRD 2.0.12 ready.\nTable master4:\n"
        "10.244.1.0/24        unicast [peer_192_168_50_12 21:31:33.012] * (100) [i]\n"
        "\tvia 192.168.50.12 on eth0\n")
    assert routes == [{"prefix": "10.244.1.0/24", "protocol": "peer_192_168_50_12", "via": "192.168.50.12"}]
