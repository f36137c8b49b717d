"""The agent's local control service: `flopwatch job start|end` over a unix socket.

gRPC (proto/flopwatch/v1/agent_control.proto) rather than an ad-hoc line protocol: the same
framework, schema discipline and error model as the collector link, generated client code for the
CLI, and status codes that say what went wrong. The servicer is thin: it translates between proto
and the job registry (flopwatch/agent/attribution/registry.py) and maps registry errors to status
codes. Access control is the socket's file mode, 0660: the agent's user and group (put the
operators, or the Slurm hooks' user, in that group); nobody else can connect. Its directory is
created 0755 and the socket file is chmod-ed to 0660 before the agent says it serves, so a
workload on the node (another user, not in the group) cannot register jobs: what a registration
says, its account above all, is the operator's word (docs/agent.md "Runs, accounts and
workload class").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import stat
from pathlib import Path

import grpc
import grpc.aio

from flopwatch.agent.attribution.registry import JobRegistry, RegisteredJob
from flopwatch.attestation import (
    PRECISION_FROM_PROTO,
    PRECISION_TO_PROTO,
    WORKLOAD_CLASS_FROM_PROTO,
    WORKLOAD_CLASS_TO_PROTO,
)
from flopwatch.errors import ConfigError, JobRegistryError
from flopwatch.identifiers import shown
from flopwatch.runs import shown_account
from flopwatch.v1 import agent_control_pb2 as cpb
from flopwatch.v1 import agent_control_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/flopwatch/agent.sock")
SOCKET_MODE = 0o660
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
_STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "conflict": grpc.StatusCode.FAILED_PRECONDITION,
    "full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "io": grpc.StatusCode.INTERNAL,
}
REASON_OF_STATUS = {v: k for k, v in _STATUS.items()}


def job_to_proto(job: RegisteredJob) -> cpb.RegisteredJob:
    return cpb.RegisteredJob(
        job_id=job.job_id,
        source=job.source,
        gpu_uuids=list(job.gpus),
        precision=PRECISION_TO_PROTO[job.precision],
        start_unix_ns=job.start_ns,
        end_unix_ns=job.end_ns or 0,
        run=job.run,
        account=job.account,
        workload_class=WORKLOAD_CLASS_TO_PROTO[job.workload_class],
        run_parent=job.run_parent,
    )


class AgentControlServicer(agent_control_pb2_grpc.AgentControlServicer):
    """Proto <-> registry. Registry writes fsync, so they run off the event loop."""

    def __init__(self, registry: JobRegistry) -> None:
        self._registry = registry

    async def StartJob(
        self, request: cpb.StartJobRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> cpb.StartJobResponse:
        precision = PRECISION_FROM_PROTO.get(request.precision)
        if precision is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown precision")
        workload_class = WORKLOAD_CLASS_FROM_PROTO.get(request.workload_class)
        if workload_class is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown workload class")
        try:
            job = await asyncio.to_thread(
                functools.partial(
                    self._registry.start,
                    request.job,
                    request.source,
                    list(request.gpus),
                    precision,
                    run=request.run,
                    account=request.account,
                    workload_class=workload_class,
                    run_parent=request.run_parent,
                )
            )
        except JobRegistryError as e:
            await context.abort(_STATUS.get(e.reason, grpc.StatusCode.UNKNOWN), e.message)
        log.info(
            "job %s started: GPUs %s, precision %s, run %s, account %s, class %s, parent %s",
            job.job_id,
            ",".join(job.gpus) or "none (declares only)",
            job.precision.value,
            shown(job.run) or "(not declared)",
            shown_account(job.account),
            job.workload_class.value,
            shown(job.run_parent) or "(not declared)",
        )
        return cpb.StartJobResponse(job=job_to_proto(job))

    async def EndJob(
        self, request: cpb.EndJobRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> cpb.EndJobResponse:
        try:
            job = await asyncio.to_thread(self._registry.end, request.job, request.source)
        except JobRegistryError as e:
            await context.abort(_STATUS.get(e.reason, grpc.StatusCode.UNKNOWN), e.message)
        log.info("job %s ended", job.job_id)
        return cpb.EndJobResponse(job=job_to_proto(job))

    async def ListRegisteredJobs(
        self,
        request: cpb.ListRegisteredJobsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> cpb.ListRegisteredJobsResponse:
        return cpb.ListRegisteredJobsResponse(jobs=[job_to_proto(j) for j in self._registry.jobs()])


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by an agent that died; refuse to take over a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"control socket {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)
            return
    raise ConfigError(f"another process serves the control socket {path}")


class ControlServer:
    """Serves AgentControl on a unix socket for as long as the agent runs."""

    def __init__(self, path: Path, registry: JobRegistry) -> None:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ConfigError(f"control socket path {path} is longer than {MAX_SOCKET_PATH} bytes")
        self.path = path
        self._registry = registry
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            _clear_stale_socket(self.path)
        except OSError as e:
            raise ConfigError(f"cannot create control socket {self.path}: {e}") from e
        server = grpc.aio.server()
        agent_control_pb2_grpc.add_AgentControlServicer_to_server(  # type: ignore[no-untyped-call]
            AgentControlServicer(self._registry), server
        )
        if server.add_insecure_port(f"unix:{self.path}") == 0:
            raise ConfigError(f"cannot listen on control socket {self.path}")
        await server.start()
        self._server = server
        # The socket was created under the process umask (022 usually: owner only may
        # connect); open it to the group now.
        try:
            os.chmod(self.path, SOCKET_MODE)
        except OSError as e:
            await self.stop()
            raise ConfigError(f"cannot set the mode of control socket {self.path}: {e}") from e
        log.info("control socket %s (mode %o)", self.path, SOCKET_MODE)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.stop(grace=1.0)
        with contextlib.suppress(OSError):
            self.path.unlink()
