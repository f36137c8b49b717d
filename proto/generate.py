"""Regenerate the Python code from the .proto files under proto/.

  proto/flopwatch/v1/*.proto                        -> flopwatch/v1/
  proto/flopwatch/vendor/kubelet/podresources/v1/   -> flopwatch/vendor/kubelet/podresources/v1/
    (the kubelet's PodResources API, vendored from Kubernetes; see the header of its api.proto)

Run `make proto` (or `python proto/generate.py`). The output is committed and
tests/test_proto_current.py fails when it is stale. Needs grpcio-tools (the `dev` extra)."""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
# Folders (relative to proto/ and to the output root) whose .proto files are compiled.
PACKAGES = ("flopwatch/v1", "flopwatch/vendor/kubelet/podresources/v1")


def generate(out_dir: pathlib.Path) -> None:
    files = sorted(
        str(p.relative_to(PROTO_ROOT))
        for pkg in PACKAGES
        for p in (PROTO_ROOT / pkg).glob("*.proto")
    )
    include = str(pathlib.Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # protoc writes a *_pb2_grpc.py for every file; keep only those of files defining a service.
    for pkg in PACKAGES:
        for stub in (out_dir / pkg).glob("*_pb2_grpc.py"):
            if "class " not in stub.read_text():
                stub.unlink()


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    generate(target)
