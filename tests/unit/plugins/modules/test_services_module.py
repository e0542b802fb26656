# SPDX-License-Identifier: GPL-3.0-or-later
"""The services module without a kernel: what it does when nft is missing."""
from __future__ import annotations

import json
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible_collections.flatnet.cluster.tests.unit.compat import patch_module_args

from ansible_collections.flatnet.cluster.plugins.modules import services as services_module


def run(args, capsys, tmp_path):
    args = dict(args, state_dir=str(tmp_path))
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path",
                              side_effect=lambda tool, *a, **k: None if tool == "nft" else f"/usr/sbin/{tool}"), \
            mock.patch.object(basic.AnsibleModule, "run_command", return_value=(0, "[]", "")):
        with pytest.raises(SystemExit):
            services_module.main()
    return json.loads(capsys.readouterr().out)


def test_absent_without_nft_is_a_no_op(capsys, tmp_path):
    out = run({"state": "absent"}, capsys, tmp_path)
    assert out["changed"] is False and not out.get("failed"), out


def test_present_without_nft_names_the_package(capsys, tmp_path):
    out = run({"services": [], "service_cidrs": ["10.96.0.0/12"]}, capsys, tmp_path)
    assert out["failed"] and "install the nftables package" in out["msg"]


def test_record_corrupt_fails_before_any_change(capsys, tmp_path):
    (tmp_path / "services.json").write_text("{not json")
    out = run({"state": "absent"}, capsys, tmp_path)
    assert out["failed"] and "services.json is corrupt" in out["msg"]
