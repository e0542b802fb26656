# SPDX-License-Identifier: GPL-3.0-or-later
"""The one table shape: both tables' transactions are create-if-missing, delete, define; an
empty one deletes (what the firewall and services modules sent before the shared helper)."""
from __future__ import annotations

from ansible_collections.flatnet.cluster.plugins.module_utils import firewall_nft, nft_table, services_nft


def test_transaction_defines_or_deletes():
    assert nft_table.transaction("inet", "t", "X\n") == "table inet t {}\ndelete table inet t\nX\n"
    assert nft_table.transaction("ip", "t") == "table ip t {}\ndelete table ip t\n"


def test_the_tables_send_what_they_sent():
    assert firewall_nft.transaction() == "table inet flatnet {}\ndelete table inet flatnet\n"
    assert services_nft.transaction() == "table ip flatnet-svc {}\ndelete table ip flatnet-svc\n"
    assert services_nft.transaction("D\n") == "table ip flatnet-svc {}\ndelete table ip flatnet-svc\nD\n"


def test_digest_of_json_is_independent_of_key_order():
    assert nft_table.digest({"a": 1, "b": [1, 2]}) == nft_table.digest({"b": [1, 2], "a": 1})
    assert nft_table.digest("text") != nft_table.digest("text ")
