"""The environment variables Kubernetes injects for Services, recognised so they can be ignored.

For every Service in a pod's namespace (unless the pod sets `enableServiceLinks: false`), the
kubelet sets Docker-link-style variables named after the Service, upper-cased with '-' as '_'.
For a Service `flopwatch-collector` with port 7443/TCP named `grpc`:

    FLOPWATCH_COLLECTOR_SERVICE_HOST=10.0.0.1
    FLOPWATCH_COLLECTOR_SERVICE_PORT=7443
    FLOPWATCH_COLLECTOR_SERVICE_PORT_GRPC=7443
    FLOPWATCH_COLLECTOR_PORT=tcp://10.0.0.1:7443
    FLOPWATCH_COLLECTOR_PORT_7443_TCP=tcp://10.0.0.1:7443
    FLOPWATCH_COLLECTOR_PORT_7443_TCP_PROTO=tcp
    FLOPWATCH_COLLECTOR_PORT_7443_TCP_PORT=7443
    FLOPWATCH_COLLECTOR_PORT_7443_TCP_ADDR=10.0.0.1

They share the prefix of the programs' own settings (FLOPWATCH_COLLECTOR_, FLOPWATCH_AGENT_ for a
Service `flopwatch-agent-metrics`). A variable is taken for one only when both its name and its
value have the shape Kubernetes gives them, so a mistyped setting (FLOPWATCH_COLLECTOR_LISTN,
FLOPWATCH_AGENT_METRICS_PORT=9465) is still refused as unknown. Pure.
"""

from __future__ import annotations

import re

_PROTO = r"(?:tcp|udp|sctp)"
_HOST = r"[0-9A-Za-z.:\[\]%-]+"  # an IPv4 or IPv6 address (or a name)
_URL = re.compile(rf"{_PROTO}://{_HOST}:\d{{1,5}}")
_PORT = re.compile(r"\d{1,5}")

# (name suffix, value) shapes; the name part before the suffix is the Service's name.
_SHAPES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (re.compile(r"[A-Z0-9_]+_SERVICE_HOST"), re.compile(_HOST)),
    (re.compile(r"[A-Z0-9_]+_SERVICE_PORT(?:_[A-Z0-9_]+)?"), _PORT),
    (re.compile(r"[A-Z0-9_]+_PORT"), _URL),
    (re.compile(r"[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)"), _URL),
    (re.compile(r"[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)_PROTO"), re.compile(_PROTO)),
    (re.compile(r"[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)_PORT"), _PORT),
    (re.compile(r"[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)_ADDR"), re.compile(_HOST)),
)


def is_service_link(name: str, value: str) -> bool:
    """Whether `name=value` is a variable Kubernetes injects for a Service."""
    return any(n.fullmatch(name) and v.fullmatch(value) for n, v in _SHAPES)
