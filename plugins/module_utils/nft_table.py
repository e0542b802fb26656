# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape every nftables table of the collection shares: hash, compare, then one transaction.

A table is written whole in one ``nft -f -`` script that creates it if missing, deletes it and
defines it again: all or nothing, so a failed load leaves the old table in place. A run
writes only when the recorded hashes of what it wrote (``desired``) and of what it then read
back (``live``) no longer both hold: a changed definition, a hand edit or a deleted table.
``firewall_nft`` (``inet flatnet``) and ``services_nft`` (``ip flatnet-svc``) render on top of
it; a new table (NetworkPolicy's) belongs beside them.

Private module_utils of flatnet.cluster: the API may change without notice.
"""

from __future__ import annotations

import hashlib
import json


def transaction(family, table, definition=""):
    """One atomic ``nft -f -`` script: create-if-missing, delete, define (all or nothing).
    Without ``definition`` it deletes the table (and is a no-op when there is none)."""
    return f"table {family} {table} {{}}\ndelete table {family} {table}\n{definition}"


def canonical(nft_json):
    """``nft -j list table ...`` without what changes on every reload (handles, metainfo)."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "handle"}
        if isinstance(obj, list):
            return [strip(x) for x in obj]
        return obj

    items = nft_json.get("nftables", []) if isinstance(nft_json, dict) else []
    return [strip(x) for x in items if "metainfo" not in x]


def digest(value):
    """SHA-256 of a text, or of a JSON value in one canonical spelling."""
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def needs_apply(record, desired_hash, live_hash):
    """Reapply unless the recorded desired and live hashes both still hold.

    ``live_hash`` is None when the table is missing. A record from another definition, a table
    edited by hand or deleted, or no record at all means the table must be written again.
    """
    if live_hash is None:
        return True
    return not (record.get("desired") == desired_hash and record.get("live") == live_hash)
