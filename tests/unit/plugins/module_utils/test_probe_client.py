# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import errno
import socket

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import probe_client as pc


@pytest.mark.parametrize("exc,reason", [
    (socket.timeout("timed out"), "timeout"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable"),
    (PermissionError(errno.EPERM, "Operation not permitted"), "error"),
    (ValueError("bad"), "error"),
])
def test_one_vocabulary(exc, reason):
    err = pc.classify(exc)
    assert err.reason == reason and err.reason in pc.REASONS and err.cause is exc
    assert pc.classify(err) is err


@pytest.mark.parametrize("exc,proto,words", [
    (socket.timeout("timed out"), "tcp", "timeout"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "udp", "refused"),
    # From the host network the output hook's reject fails a UDP send with EPERM: a refusal.
    (PermissionError(errno.EPERM, "Operation not permitted"), "udp", "refused"),
    (PermissionError(errno.EPERM, "Operation not permitted"), "tcp", "error: [Errno 1] Operation not permitted"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "tcp", "error: [Errno 113] No route to host"),
    (ValueError("Expecting value: line 1 column 1 (char 0)"), "tcp",
     "error: Expecting value: line 1 column 1 (char 0)"),
    (pc.ProbeError("error", "HTTP /: unexpected answer b''"), "tcp", "error: HTTP /: unexpected answer b''"),
])
def test_service_reason_keeps_the_service_results_words(exc, proto, words):
    assert pc.service_reason(exc, proto) == words


def test_missing_namespace_names_the_pod_and_keeps_the_cause():
    with pytest.raises(pc.ProbeError) as info:
        with pc.in_netns("no-such-pod-xyz"):
            pass
    assert info.value.reason == "error" and "pod no-such-pod-xyz has no network namespace" in str(info.value)
    assert pc.service_reason(info.value, "tcp").startswith("error: [Errno 2] no network namespace no-such-pod-xyz")
