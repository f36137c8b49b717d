"""Client of the agent's control socket, for `flopwatch job` (and the Slurm prolog/epilog)."""

from __future__ import annotations

from pathlib import Path

import grpc

from flopwatch.agent.control.server import REASON_OF_STATUS
from flopwatch.attestation import PRECISION_TO_PROTO, WORKLOAD_CLASS_TO_PROTO
from flopwatch.errors import ConfigError, FlopwatchError, JobRegistryError, TransportError
from flopwatch.model import Precision
from flopwatch.runs import WorkloadClass
from flopwatch.v1 import agent_control_pb2 as cpb
from flopwatch.v1 import agent_control_pb2_grpc


def _translate(e: grpc.RpcError, path: Path) -> FlopwatchError:
    code = e.code() if isinstance(e, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (e.details() if isinstance(e, grpc.Call) else None) or str(e)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return ConfigError(details)
    if code in REASON_OF_STATUS:
        return JobRegistryError(REASON_OF_STATUS[code], details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return TransportError(
            f"no agent answers on {path} ({details}); is `flopwatch agent` running with "
            f"--control-socket {path}, and may this user open it?"
        )
    return TransportError(f"agent control socket {path}: {code.name}: {details}")


class ControlClient:
    """One connection to the local agent; use as a context manager."""

    def __init__(self, path: Path, *, timeout_s: float = 10.0) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._channel = grpc.insecure_channel(f"unix:{path}")
        # The generated constructor carries no annotations.
        self._stub = agent_control_pb2_grpc.AgentControlStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def start(
        self,
        job: str,
        *,
        source: str,
        gpus: list[str],
        precision: Precision,
        run: str = "",
        account: str = "",
        workload_class: WorkloadClass = WorkloadClass.UNKNOWN,
        run_parent: str = "",
    ) -> cpb.RegisteredJob:
        request = cpb.StartJobRequest(
            job=job,
            source=source,
            gpus=gpus,
            precision=PRECISION_TO_PROTO[precision],
            run=run,
            account=account,
            workload_class=WORKLOAD_CLASS_TO_PROTO[workload_class],
            run_parent=run_parent,
        )
        try:
            response: cpb.StartJobResponse = self._stub.StartJob(request, timeout=self._timeout_s)
        except grpc.RpcError as e:
            raise _translate(e, self.path) from e
        return response.job

    def end(self, job: str, *, source: str) -> cpb.RegisteredJob:
        try:
            response: cpb.EndJobResponse = self._stub.EndJob(
                cpb.EndJobRequest(job=job, source=source), timeout=self._timeout_s
            )
        except grpc.RpcError as e:
            raise _translate(e, self.path) from e
        return response.job

    def list(self) -> list[cpb.RegisteredJob]:
        try:
            response: cpb.ListRegisteredJobsResponse = self._stub.ListRegisteredJobs(
                cpb.ListRegisteredJobsRequest(), timeout=self._timeout_s
            )
        except grpc.RpcError as e:
            raise _translate(e, self.path) from e
        return list(response.jobs)
