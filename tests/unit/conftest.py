# SPDX-License-Identifier: GPL-3.0-or-later
"""Make ``ansible_collections.flatnet.cluster`` importable when pytest runs from a plain checkout.

ansible-test runs unit tests from inside an ``ansible_collections/flatnet/cluster`` tree;
a developer's checkout can live anywhere, so link it into a temporary tree of that shape.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collection_root():
    parts = ROOT.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "flatnet"] and parts[-1] == "cluster":
        return os.sep.join(parts[:-3])
    tmp = tempfile.mkdtemp(prefix="flatnet-unit-")
    atexit.register(shutil.rmtree, tmp, True)
    os.makedirs(os.path.join(tmp, "ansible_collections", "flatnet"))
    os.symlink(ROOT, os.path.join(tmp, "ansible_collections", "flatnet", "cluster"))
    return tmp


_root = _collection_root()
if _root not in sys.path:
    sys.path.insert(0, _root)
