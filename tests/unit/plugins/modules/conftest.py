# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _module_side_warnings(monkeypatch):
    """Run module code as it runs on a managed host.

    Once any controller code is imported in the same pytest process (action, filter and
    connection tests do), ``module.warn()`` goes to the controller's display instead of the
    module result, and the registry deduplicates warnings across tests.
    """
    from ansible.module_utils import _internal
    from ansible.module_utils.common import warnings

    monkeypatch.setattr(_internal, "is_controller", False, raising=False)
    for registry in ("_global_warnings", "_global_deprecations"):
        getattr(warnings, registry, {}).clear()
    yield
