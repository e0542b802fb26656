# SPDX-License-Identifier: GPL-3.0-or-later
"""inventories/lab-100 is what its generator writes, and the generator's layout holds."""

from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(ROOT, "inventories", "lab-100")


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("lab100_generate", os.path.join(INVENTORY, "generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_inventory_is_current(gen):
    assert gen.main(["--check"]) == 0


def test_layout_100_nodes_5_per_subnet(gen):
    hosts, gvars = gen.render(100, 5, 10, "lab100", 10)
    assert hosts.count("flatnet_lab_subnet:") == 100
    assert gvars.count("  - name: s") == 20
    assert "n100:\n          flatnet_lab_subnet: s20\n          flatnet_lab_ip: 172.20.20.15" in hosts
    assert "flatnet_backend: auto" in gvars and "flatnet_verify_sample: 10" in gvars
    assert "flatnet_pods_per_node: 10" in gvars


def test_check_finds_a_stale_file(gen, tmp_path):
    out = str(tmp_path)
    assert gen.main(["--nodes", "6", "--per-subnet", "2", "--out", out]) == 0
    assert gen.main(["--nodes", "6", "--per-subnet", "2", "--out", out, "--check"]) == 0
    with open(os.path.join(out, "hosts.yml"), "a", encoding="utf-8") as handle:
        handle.write("# edited by hand\n")
    assert gen.main(["--nodes", "6", "--per-subnet", "2", "--out", out, "--check"]) == 1
    assert gen.main(["--nodes", "7", "--per-subnet", "2", "--out", out, "--check"]) == 1
