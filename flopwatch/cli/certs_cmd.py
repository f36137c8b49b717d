"""`flopwatch certs ca|issue`: a private CA and the mTLS certificates of collector and agents."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from flopwatch import certs
from flopwatch.cli.common import EXIT_OK
from flopwatch.errors import ConfigError

HELP = "create a private CA and issue the mTLS certificates of the collector and the agents"

_CA_HELP = "create a new CA: writes OUT/ca.pem (give to every side) and OUT/ca.key (secret)"
_ISSUE_HELP = (
    "issue a server (collector) or client (agent, or reader with --role reader) certificate: "
    "OUT/NAME.pem and .key"
)

# A certificate's --name becomes its file stem, so it may not hold path separators.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_EPILOG = """\
how the files map to the TLS flags (every side trusts the same ca.pem):

  flopwatch certs ca     --out pki
  flopwatch certs issue  --ca-dir pki --out pki --name collector --server --dns collector.example
  flopwatch certs issue  --ca-dir pki --out pki --name node-1 --client
  flopwatch certs issue  --ca-dir pki --out pki --name dashboard --client --role reader

  side       --tls-ca       --tls-cert           --tls-key
  collector  pki/ca.pem     pki/collector.pem    pki/collector.key   (flopwatch collector)
  agent      pki/ca.pem     pki/node-1.pem       pki/node-1.key      (flopwatch agent, job)
  reader     pki/ca.pem     pki/dashboard.pem    pki/dashboard.key   (flopwatch jobs, nodes list)

The collector accepts clients whose certificate this CA signed, each for its role: an agent's
certificate streams records (and reads tree heads and proofs), a reader's lists jobs and nodes
(and reads tree heads and proofs); neither does the other's. A client certificate without a
role (issued before roles) counts as an agent's. Agents accept a collector whose certificate
names (--dns/--ip) the host they dial. Keep ca.key off the
collector and the nodes: only `certs issue` needs it. Keys are written 0600, certificates
0644, and no existing file is ever overwritten. OUT is created if it is missing, but not its
parent directories.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "certs",
        help=HELP,
        description=HELP + " (ECDSA P-256).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="certs_action", required=True, metavar="ACTION")

    ca = actions.add_parser(
        "ca",
        help=_CA_HELP,
        description=_CA_HELP + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ca.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    ca.add_argument("--cn", default=certs.DEFAULT_CA_NAME, help="CA common name (%(default)s)")
    ca.add_argument(
        "--days", type=int, default=certs.DEFAULT_CA_DAYS, help="validity (%(default)s days)"
    )

    issue = actions.add_parser(
        "issue",
        help=_ISSUE_HELP,
        description=_ISSUE_HELP + ", signed by the CA in --ca-dir.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    issue.add_argument(
        "--ca-dir", type=Path, required=True, metavar="DIR", help="holds ca.pem, ca.key"
    )
    issue.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    issue.add_argument(
        "--name", required=True, help="common name and file stem (e.g. collector, node-1)"
    )
    role = issue.add_mutually_exclusive_group(required=True)
    role.add_argument("--server", action="store_true", help="for the collector (serverAuth)")
    role.add_argument("--client", action="store_true", help="for an agent or a reader (clientAuth)")
    issue.add_argument(
        "--dns",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="server only: DNS names agents dial (default with no --ip: localhost)",
    )
    issue.add_argument(
        "--ip",
        action="extend",
        nargs="+",
        metavar="ADDR",
        help="server only: IP addresses agents dial (default with no --dns: 127.0.0.1, ::1)",
    )
    issue.add_argument(
        "--role",
        choices=certs.CLIENT_ROLES,
        help="client only: agent (default: streams records) or reader (dashboards, operators, "
        "regulators: lists jobs and nodes); both read the transparency log",
    )
    issue.add_argument(
        "--days", type=int, default=certs.DEFAULT_LEAF_DAYS, help="validity (%(default)s days)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.certs_action == "ca":
        return _run_ca(args)
    return _run_issue(args)


def _out_dir(out: Path) -> Path:
    """The --out directory, created (0755) if it is missing, but not its parents: a mistyped
    path is an error, not a new directory tree."""
    try:
        out.mkdir(mode=0o755)
    except FileExistsError:
        if not out.is_dir():
            raise ConfigError(f"--out {out} is not a directory") from None
    except FileNotFoundError:
        raise ConfigError(
            f"--out {out}: directory {out.parent} does not exist (create it first)"
        ) from None
    except OSError as e:
        raise ConfigError(f"--out {out}: {e.strerror}") from e
    return out


def _run_ca(args: argparse.Namespace) -> int:
    out = _out_dir(args.out)
    pair = certs.create_ca(args.cn, args.days)
    cert_path, key_path = out / certs.CA_CERT_FILE, out / certs.CA_KEY_FILE
    certs.write_pair(cert_path, key_path, pair)
    _report(cert_path, key_path, pair)
    return EXIT_OK


def _run_issue(args: argparse.Namespace) -> int:
    name: str = args.name
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r}: use up to 64 letters, digits, '.', '_' or '-' (it names the files)"
        )
    dns: list[str] = args.dns or []
    ips: list[str] = args.ip or []
    if args.client and (dns or ips):
        raise ConfigError("--dns and --ip are for --server certificates")
    if args.server and args.role is not None:
        raise ConfigError("--role is for --client certificates")
    ca = certs.load_ca(args.ca_dir)
    pair = certs.issue(
        ca.cert,
        ca.key,
        name,
        server=args.server,
        dns_names=dns,
        ip_addresses=ips,
        valid_days=args.days,
        role=args.role or certs.AGENT_ROLE,
    )
    cert_path, key_path = certs.pair_paths(_out_dir(args.out), name)
    certs.write_pair(cert_path, key_path, pair)
    _report(cert_path, key_path, pair)
    return EXIT_OK


def _report(cert_path: Path, key_path: Path, pair: certs.CertifiedKey) -> None:
    s = certs.summarize(pair.cert)
    names = [*s.dns_names, *s.ip_addresses]
    print(f"wrote {cert_path} (certificate, 0644)")
    print(f"wrote {key_path} (private key, 0600)")
    print(f"  role:     {s.role}" + (f" ({', '.join(s.client_roles)})" if s.client_roles else ""))
    print(f"  subject:  CN={s.common_name}")
    print(f"  issuer:   CN={s.issuer_common_name}")
    if names:
        print(f"  names:    {', '.join(names)}")
    print(f"  expires:  {s.not_after:%Y-%m-%d %H:%M:%S} UTC")
    print(f"  sha256:   {s.sha256_fingerprint}")
