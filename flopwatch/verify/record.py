"""Verify one signed attestation record. Pure: no I/O, no clock unless one is passed in.

The collector runs this on every envelope it receives; the offline verifier runs it on every
envelope of a report. It checks everything a single record can prove on its own. What needs
history (sequence, chain, overlap with earlier intervals) is judged by `flopwatch.chain`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.attestation import (
    METHOD_FROM_PROTO,
    PRECISION_FROM_PROTO,
    WORKLOAD_CLASS_FROM_PROTO,
    GapInfo,
    JobContribution,
    MeasuredInterval,
    active_of,
    gpu_key,
    parse_payload,
)
from flopwatch.binding import (
    MAX_CEC_REPORT_BYTES,
    MAX_CERT_CHAIN_BYTES,
    MAX_REPORT_BYTES,
    binding_nonce_of,
)
from flopwatch.dsse import Envelope
from flopwatch.errors import VerificationError
from flopwatch.identifiers import identifier_problem, text_problem
from flopwatch.job_ids import cluster_of
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.model import MODEL_VERSION, Pipe, Precision
from flopwatch.model.device import DeviceModel, device_model
from flopwatch.model.figures import JobFigures, Method, method_for
from flopwatch.model.flops import PPM
from flopwatch.runs import CLASS_BIT, label_problem, run_of
from flopwatch.v1 import attestation_pb2 as pb
from flopwatch.verify.sums import RecordSums, SumsBuilder, utc_day

SUPPORTED_MODEL_VERSIONS = frozenset({MODEL_VERSION})
_MAX_SMS = 1024
_MAX_CLOCK_MHZ = 10_000
_NEVER = 2**64  # later than any time a record holds (uint64 nanoseconds)
# A class's bit (`flopwatch.runs.CLASS_BIT`) by its number in a record; unknown numbers are
# refused before this is asked.
_CLASS_BIT_OF_PROTO = {n: CLASS_BIT[c] for n, c in WORKLOAD_CLASS_FROM_PROTO.items()}
# How a job share's figures are summed (`SumsBuilder.add_job`): job id, declared run (empty:
# none), account, class bit.
_Labels = tuple[str, str, str, int]
# A job share's fields but its figures: job id, source, run, account, run source, parent run,
# class, precision.
_ShareKey = tuple[str, str, str, str, str, str, int, int]


@dataclass(frozen=True)
class VerifiedRecord:
    """What a record proves once its signature and contents check out.

    `sums` is what the record adds up to, summed while it was checked. Its figures per GPU
    interval (`contributions`, `measured`) are read from the attestation when asked for: once
    verified, every figure it claims is the recomputed one.
    """

    key_id: str
    node_id: str
    cluster: str
    sequence: int
    digest: bytes
    previous_digest: bytes
    envelope: Envelope
    gaps: tuple[GapInfo, ...]
    sums: RecordSums
    limits: Limits = field(default=DEFAULT_LIMITS, repr=False, compare=False)

    @cached_property
    def attestation(self) -> pb.Attestation:
        """The payload, parsed within `limits` (as it was when verified). The verifier hands
        it over parsed; a record a verify worker sent is parsed again only if asked for (the
        ingest path never asks: `sums` hold what it adds up)."""
        return parse_payload(self.envelope.payload, self.limits)

    @cached_property
    def contributions(self) -> tuple[JobContribution, ...]:
        """Each job's figures from each GPU interval, by GPU, then start; a record without a
        run for a job (older records, undeclared runs) gives the job's own id as its run."""
        gpus = self.attestation.gpus
        return tuple(
            JobContribution(
                j.job_id,
                gpus[iv.gpu].uuid,
                iv.start_unix_ns,
                iv.end_unix_ns,
                j.flops_estimate,
                j.flops_upper,
                run_of(j.job_id, j.run),
                j.account,
                WORKLOAD_CLASS_FROM_PROTO[j.workload_class],
            )
            for iv in _in_order(self.attestation)
            for j in iv.jobs
        )

    @cached_property
    def measured(self) -> tuple[MeasuredInterval, ...]:
        """Each GPU interval with the whole device's figures, by GPU, then start."""
        gpus = self.attestation.gpus
        return tuple(
            MeasuredInterval(
                gpu_key(gpus[iv.gpu].uuid, gpus[iv.gpu].mig_instance),
                gpus[iv.gpu].uuid,
                iv.start_unix_ns,
                iv.end_unix_ns,
                iv.flops_estimate,
                iv.flops_upper,
            )
            for iv in _in_order(self.attestation)
        )

    @property
    def gpu_intervals(self) -> tuple[tuple[str, int, int], ...]:
        return tuple((m.gpu_uuid, m.start_ns, m.end_ns) for m in self.measured)


def _in_order(att: pb.Attestation) -> list[pb.GpuInterval]:
    return sorted(att.intervals, key=lambda i: (i.gpu, i.start_unix_ns))


def _identifier(value: str, what: str, limits: Limits, *, required: bool = True) -> None:
    """The one identifier rule (`flopwatch.identifiers`); an optional one may be empty."""
    if not required and not value:
        return
    problem = identifier_problem(value, limits.max_identifier_chars)
    if problem is not None:
        raise VerificationError("malformed", f"{what} {problem}")


def _text(value: str, what: str, limits: Limits) -> None:
    """Free text: bounded, no control characters but line breaks and tabs."""
    problem = text_problem(value, limits.max_string_chars)
    if problem is not None:
        raise VerificationError("malformed", f"{what} {problem}")


@dataclass
class _Scope:
    """What checking one record's intervals shares."""

    attestation: pb.Attestation
    # Each GPU uuid and job id of the record as ONE string object, however often it recurs: a
    # record of many rounds names the same few again and again (and each job id is checked once).
    uuids: list[str]
    models: list[DeviceModel]  # each GPU's FLOP model, by index
    job_ids: dict[str, str] = field(default_factory=dict)
    # Job shares checked already, by their fields but the figures: precision and labels.
    checked: dict[_ShareKey, tuple[Precision, _Labels]] = field(default_factory=dict)
    sums: SumsBuilder = field(default_factory=SumsBuilder)


class RecordVerifier:
    """Checks signed records against a set of trusted node keys.

    `now_ns` (a callable) enables the clock-skew check on interval ends; leave it None to verify
    historical records offline.
    """

    def __init__(
        self,
        *,
        trusted_keys: Mapping[str, Ed25519PublicKey],
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] | None = None,
    ) -> None:
        self._keys = trusted_keys
        self._limits = limits
        self._now_ns = now_ns

    def verify_bytes(self, data: bytes) -> VerifiedRecord:
        return self.verify(Envelope.from_bytes(data, self._limits))

    def verify(self, envelope: Envelope) -> VerifiedRecord:
        """Return the verified record or raise VerificationError with a reason code."""
        lim = self._limits
        # 1. Signed by a trusted key over PAE(type, payload); the payload is never re-encoded.
        key_id = envelope.verify(self._keys)
        # 2. The payload decodes within the size and count limits.
        att = parse_payload(envelope.payload, lim)
        # 3. The payload names the key that signed it and a model version this code knows.
        if att.key_id != key_id:
            raise VerificationError("key_mismatch", "payload key_id is not the signing key")
        if att.flop_model_version not in SUPPORTED_MODEL_VERSIONS:
            raise VerificationError(
                # The version is unchecked text from the payload: echo only its start.
                "unknown_model",
                f"FLOP model version {att.flop_model_version[:32]!r} is not supported",
            )
        _identifier(att.node_id, "node_id", lim)
        _identifier(att.cluster, "cluster", lim, required=False)
        _identifier(att.agent_version, "agent_version", lim, required=False)
        # 4. Sequence numbers start at 1; only the first record has no predecessor.
        if att.sequence < 1:
            raise VerificationError("bad_sequence", "sequence numbers start at 1")
        if att.sequence == 1 and att.previous_digest:
            raise VerificationError("bad_chain", "sequence 1 must not name a previous record")
        if att.sequence > 1 and len(att.previous_digest) != 32:
            raise VerificationError("bad_chain", "previous_digest must be a SHA-256 digest")
        # 5. GPU identities are sane, and no device is listed twice: intervals naming its two
        #    entries would count the same GPU-seconds twice without overlapping per entry.
        devices = [gpu_key(g.uuid, g.mig_instance) for g in att.gpus]
        for g in att.gpus:
            self._check_gpu(g)
        if len(set(devices)) != len(devices):
            twice = next(d for i, d in enumerate(devices) if d in devices[:i])
            raise VerificationError("malformed", f"GPU {twice!r} is listed twice")
        # 6. Every interval is well-formed, physically possible and its figures recompute.
        scope = _Scope(
            att,
            uuids=[g.uuid for g in att.gpus],
            models=[
                device_model((g.cc_major, g.cc_minor), g.sm_count, g.max_sm_clock_mhz)
                for g in att.gpus
            ],
        )
        sums = scope.sums
        last_end: dict[int, int] = {}
        earliest, latest = _NEVER, 0  # the earliest and the latest end of an interval
        for iv in _in_order(att):
            self._check_interval(scope, iv)
            start, end = iv.start_unix_ns, iv.end_unix_ns
            if start < last_end.get(iv.gpu, start):
                raise VerificationError("overlap", "two intervals of one GPU overlap")
            last_end[iv.gpu] = end
            earliest = end if end < earliest else earliest
            latest = end if end > latest else latest
            sums.add_interval(
                devices[iv.gpu],
                (
                    iv.flops_estimate,
                    iv.flops_upper,
                    start,
                    end,
                    1,
                    (end - start) * PPM,
                    iv.energy_mj * PPM,
                ),
            )
        # 7. Gaps name a GPU of the record and a proper time range.
        gaps = tuple(self._check_gap(att, g) for g in att.gaps)
        # 8. Hardware bindings name a GPU of the record, and a GPU report was requested over
        #    this record's nonce (the report's signature chain is NVIDIA's tools' to check).
        for b in att.bindings:
            self._check_binding(att, b)
        # 9. With a clock: every interval and gap ends within [now - max age, now + skew]. Last,
        #    so that "future" (answered "retry": the record may be sound, its time not yet
        #    come) is said only of a record that passes every other check.
        if self._now_ns is not None:
            gap_ends = [g.end_ns for g in gaps]
            earliest, latest = min([earliest, *gap_ends]), max([latest, *gap_ends])
            self._check_clock(earliest, latest, self._now_ns())
        record = VerifiedRecord(
            key_id=key_id,
            node_id=att.node_id,
            cluster=att.cluster,
            sequence=att.sequence,
            digest=envelope.digest,
            previous_digest=att.previous_digest,
            envelope=envelope,
            gaps=gaps,
            sums=sums.build(att.flop_model_version),
            limits=lim,
        )
        record.__dict__["attestation"] = att  # parsed already: the cached_property's value
        return record

    def _check_gpu(self, g: pb.GpuIdentity) -> None:
        lim = self._limits
        _identifier(g.uuid, "GPU uuid", lim)
        _identifier(g.serial, "GPU serial", lim, required=False)
        _identifier(g.mig_instance, "GPU MIG instance", lim, required=False)
        _text(g.name, "GPU name", lim)
        if not 0 < g.sm_count <= _MAX_SMS:
            raise VerificationError("implausible", f"GPU {g.uuid} claims {g.sm_count} SMs")
        if not 0 < g.max_sm_clock_mhz <= _MAX_CLOCK_MHZ:
            raise VerificationError("implausible", f"GPU {g.uuid} max clock {g.max_sm_clock_mhz}")

    def _check_times(self, start_ns: int, end_ns: int, *, bounded: bool = True) -> None:
        if start_ns <= 0 or end_ns <= start_ns:
            raise VerificationError("bad_interval", "interval must have start < end, after 1970")
        if bounded and end_ns - start_ns > self._limits.max_interval_ns:
            raise VerificationError("bad_interval", "interval is longer than the limit")

    def _check_clock(self, earliest: int, latest: int, now_ns: int) -> None:
        """The record's intervals and gaps end from `earliest` to `latest` (none: `_NEVER`
        to 0)."""
        if latest == 0:
            return
        lim = self._limits
        if earliest < now_ns - lim.max_record_age_ns:
            raise VerificationError(
                "too_old",
                f"the record holds time that ended {(now_ns - earliest) / 86400e9:.0f} days "
                f"before the verifier's clock; at most {lim.max_record_age_ns / 86400e9:g} days "
                "are accepted",
            )
        if latest > now_ns + lim.max_clock_skew_ns:
            raise VerificationError(
                "future",
                f"the record holds time that ends {(latest - now_ns) / 1e9:.0f} s after the "
                f"verifier's clock, more than the allowed skew of "
                f"{lim.max_clock_skew_ns / 1e9:g} s: the node's clock runs ahead",
            )

    def _check_job_id(self, job_id: str, cluster: str) -> None:
        _identifier(job_id, "job_id", self._limits)
        job_cluster = cluster_of(job_id)
        if job_cluster is not None and job_cluster != cluster:
            raise VerificationError(
                "cluster_mismatch",
                f"job {job_id!r} names cluster {job_cluster!r}, record is from {cluster!r}",
            )

    def _check_labels(self, j: pb.JobShare, cluster: str) -> None:
        """A job's run, account, run source and parent run: the identifier rule where set; a
        run source and a parent only with a run; a run in a job id's form names the record's
        cluster."""
        lim = self._limits
        for value, what in (
            (j.run, "run"),
            (j.account, "account"),
            (j.run_source, "run source"),
            (j.run_parent, "parent run"),
        ):
            problem = label_problem(value, lim.max_identifier_chars)
            if problem is not None:
                raise VerificationError("malformed", f"job {j.job_id!r}: {what} {problem}")
        if j.run_source and not j.run:
            raise VerificationError("malformed", f"job {j.job_id!r}: a run source without a run")
        if j.run_parent and not j.run:
            raise VerificationError("malformed", f"job {j.job_id!r}: a parent run without a run")
        run_cluster = cluster_of(j.run)
        if run_cluster is not None and run_cluster != cluster:
            raise VerificationError(
                "cluster_mismatch",
                f"job {j.job_id!r}: run {j.run!r} names cluster {run_cluster!r}, record is from "
                f"{cluster!r}",
            )

    def _check_share(self, scope: _Scope, j: pb.JobShare) -> tuple[Precision, _Labels]:
        """Check a job share's fields but its figures; return its precision and how its
        figures are labelled: (job id, declared run, account, class bit)."""
        lim, cluster = self._limits, scope.attestation.cluster
        job_id = scope.job_ids.get(j.job_id)
        if job_id is None:  # ONE string object per job id of the record
            job_id = j.job_id
            self._check_job_id(job_id, cluster)
            scope.job_ids[job_id] = job_id
        _identifier(j.source, "job source", lim, required=False)
        self._check_labels(j, cluster)
        if j.run_parent:
            scope.sums.add_parent((j.account, j.run), j.run_parent)
        if j.workload_class not in WORKLOAD_CLASS_FROM_PROTO:
            raise VerificationError(
                "malformed", f"job {j.job_id!r}: unknown workload class {j.workload_class}"
            )
        precision = PRECISION_FROM_PROTO.get(j.declared_precision)
        if precision is None:
            raise VerificationError("malformed", f"unknown precision {j.declared_precision}")
        return precision, (job_id, j.run, j.account, _CLASS_BIT_OF_PROTO[j.workload_class])

    def _check_interval(self, scope: _Scope, iv: pb.GpuInterval) -> None:
        lim = self._limits
        att = scope.attestation
        if iv.gpu >= len(att.gpus):
            raise VerificationError("malformed", f"interval names GPU #{iv.gpu}, not in record")
        model = scope.models[iv.gpu]
        uuid = scope.uuids[iv.gpu]
        start_ns, end_ns = iv.start_unix_ns, iv.end_unix_ns
        self._check_times(start_ns, end_ns)
        duration, elapsed, active = end_ns - start_ns, iv.elapsed_sm_cycles, active_of(iv)
        method = METHOD_FROM_PROTO.get(iv.method)
        if method is None:
            raise VerificationError("malformed", f"unknown method {iv.method}")
        utilization = iv.utilization_centipercent
        self._check_counters(
            model,
            method,
            duration=duration,
            elapsed=elapsed,
            active=active,
            utilization=utilization,
        )
        jobs = iv.jobs
        if not 0 < len(jobs) <= lim.max_jobs_per_interval:
            raise VerificationError("malformed", f"{len(jobs)} jobs in one interval")
        shares = []
        labelled = []
        checked = scope.checked
        for j in jobs:
            key = (
                j.job_id,
                j.source,
                j.run,
                j.account,
                j.run_source,
                j.run_parent,
                j.workload_class,
                j.declared_precision,
            )
            found = checked.get(key)
            if found is None:  # each distinct share's fields are checked once per record
                found = checked[key] = self._check_share(scope, j)
            precision, labels = found
            shares.append((j.share_ppm, precision))
            labelled.append(labels)
        if sum(share for share, _ in shares) != PPM:
            raise VerificationError("bad_shares", "job shares do not sum to 1,000,000 ppm")
        figures = model.figures(
            duration,
            elapsed,
            active,
            method=method,
            shares=shares,
            utilization_centipercent=utilization,
        )
        _add_jobs(scope.sums, iv, uuid, labelled, figures.jobs)
        if iv.flops_upper != figures.flops_upper or iv.flops_estimate != figures.flops_estimate:
            raise VerificationError("flops_mismatch", "interval totals do not match its counters")
        if figures.flops_upper > model.physical_peak(duration):
            raise VerificationError("implausible", "claims more FLOPs than the GPU's peak")

    def _check_counters(
        self,
        model: DeviceModel,
        method: Method,
        *,
        duration: int,
        elapsed: int,
        active: Sequence[tuple[Pipe, int]],
        utilization: int,
    ) -> None:
        expected = method_for(model.cc, method is not Method.NVML_UTILIZATION)
        if method is not expected:
            raise VerificationError("bad_method", f"method {method.value} for cc {model.cc}")
        if elapsed > model.max_elapsed(duration) * (1 + self._limits.clock_tolerance):
            raise VerificationError("implausible", "SM clock integral exceeds the maximum clock")
        for p, cycles in active:
            if cycles > elapsed:
                raise VerificationError("implausible", f"{p.value} busy more cycles than elapsed")
        if utilization > 10_000:
            raise VerificationError("implausible", "utilization above 100%")
        if method is not Method.NVML_UTILIZATION and utilization:
            raise VerificationError("bad_method", "utilization given with counter-based method")

    def _check_gap(self, att: pb.Attestation, g: pb.Gap) -> GapInfo:
        if g.gpu >= len(att.gpus):
            raise VerificationError("malformed", f"gap names GPU #{g.gpu}, not in record")
        # A gap claims no work, so it may be long: an agent can be down for days.
        self._check_times(g.start_unix_ns, g.end_unix_ns, bounded=False)
        _text(g.detail, "gap detail", self._limits)
        reason = pb.GapReason.Name(g.reason) if g.reason in pb.GapReason.values() else "UNKNOWN"
        return GapInfo(
            gpu_uuid=att.gpus[g.gpu].uuid,
            start_ns=g.start_unix_ns,
            end_ns=g.end_unix_ns,
            reason=reason.removeprefix("GAP_REASON_").lower(),
            detail=g.detail,
        )

    def _check_binding(self, att: pb.Attestation, b: pb.GpuBinding) -> None:
        if b.gpu >= len(att.gpus):
            raise VerificationError("malformed", f"binding names GPU #{b.gpu}, not in record")
        _text(b.detail, "binding detail", self._limits)
        data = (b.nonce, b.report, b.cec_report, b.cert_chain)
        if b.status != pb.BINDING_STATUS_REPORT:
            if any(data):
                raise VerificationError("malformed", "report data in a binding without a report")
            return
        if b.nonce != binding_nonce_of(att):
            raise VerificationError(
                "bad_binding", "GPU report nonce does not bind this record's key and sequence"
            )
        if not b.report:
            raise VerificationError("bad_binding", "binding says REPORT but holds no report")
        limits = (MAX_REPORT_BYTES, MAX_CEC_REPORT_BYTES, MAX_CERT_CHAIN_BYTES)
        if any(len(blob) > most for blob, most in zip(data[1:], limits, strict=True)):
            raise VerificationError("too_many", "GPU report larger than NVML can return")


def _add_jobs(
    sums: SumsBuilder,
    iv: pb.GpuInterval,
    uuid: str,
    labelled: Sequence[_Labels],
    figures: Sequence[JobFigures],
) -> None:
    """Each job's claimed figures equal the recomputed ones; add them up, with its GPU time
    and energy by its share, exact: femtoseconds (ns x ppm) and nanojoules (mJ x ppm); slot 7
    adds up the intervals' whole GPU-ns (a sum-tree leaf's). An interval several jobs share is
    noted once for their runs.

    Written for speed (it runs for every job of every interval a collector verifies): the
    interval's fields are read once, and the addition to `SumsBuilder.labelled` is inline."""
    start_ns, end_ns, energy = iv.start_unix_ns, iv.end_unix_ns, iv.energy_mj
    day, duration = utc_day(end_ns), end_ns - start_ns
    if len(labelled) > 1:
        sums.add_shared_interval(labelled, duration)
    acc = sums.labelled
    for j, (job_id, run, account, bit), f in zip(iv.jobs, labelled, figures, strict=True):
        estimate, upper = f.flops_estimate, f.flops_upper
        if j.flops_estimate != estimate or j.flops_upper != upper:
            raise VerificationError(
                "flops_mismatch",
                f"job {j.job_id!r}: claims {j.flops_estimate}/{j.flops_upper} FLOPs, "
                f"counters give {estimate}/{upper}",
            )
        share = j.share_ppm
        key = (job_id, uuid, run, account, bit, day)
        a = acc.get(key)
        if a is None:
            acc[key] = [
                estimate,
                upper,
                start_ns,
                end_ns,
                1,
                duration * share,
                energy * share,
                duration,
            ]
            continue
        a[0] += estimate
        a[1] += upper
        a[2] = min(a[2], start_ns)
        a[3] = max(a[3], end_ns)
        a[4] += 1
        a[5] += duration * share
        a[6] += energy * share
        a[7] += duration
