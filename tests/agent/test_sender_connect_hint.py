"""What the agent says when its connection fails in the TLS handshake (gRPC says "Socket
closed"); the strings are gRPC 1.85's, seen against a real collector in
tests/hostile/test_resource_limits.py."""

from __future__ import annotations

import grpc
import pytest

from flopwatch.agent.sender import explain_connect_failure

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
PREFIX = "failed to connect to all addresses; last error: "


@pytest.mark.parametrize(
    ("details", "insecure", "expected"),
    [
        (PREFIX + "UNAVAILABLE: ipv4:127.0.0.1:7443: Socket closed", False, "refused our client"),
        (
            PREFIX + "UNAVAILABLE: ipv4:127.0.0.1:7443: Handshake read failed (Socket closed)",
            False,
            "refused our client",
        ),
        (
            PREFIX + "UNKNOWN: ipv4:127.0.0.1:7443: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
            "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
            False,
            "we refused the collector's certificate",
        ),
        (
            PREFIX + "UNKNOWN: ipv4:127.0.0.1:7443: Tls handshake failed (TSI_PROTOCOL_FAILURE): "
            "SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER",
            False,
            "does not speak TLS",
        ),
        (PREFIX + "UNAVAILABLE: ipv4:127.0.0.1:7443: Socket closed", True, "does it expect TLS"),
    ],
)
def test_handshake_failures_say_what_to_check(details: str, insecure: bool, expected: str) -> None:
    assert expected in explain_connect_failure(UNAVAILABLE, details, insecure)


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (UNAVAILABLE, PREFIX + "UNKNOWN: ipv4:127.0.0.1:1: Failed to connect: Connection refused"),
        (UNAVAILABLE, "stream closed: no record for 600 s (stream_idle_timeout_s)"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "32 streams are open from 10.0.0.7 already"),
    ],
)
def test_other_failures_get_no_hint(code: grpc.StatusCode, details: str) -> None:
    assert explain_connect_failure(code, details, False) == ""
