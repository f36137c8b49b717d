"""Size, count and rate limits on records, and where every other bound is named.

`Limits` holds the bounds every holder of a record applies to it: the agent when it signs, the
collector when it verifies, the offline verifier when it checks a bundle. Tests refer to them by
name.

Bounds that belong to one component are named beside it, in its configuration object or as a
module constant, and listed here so a reviewer finds them all (tests/test_limits.py checks that
each one named below exists):

    flopwatch.verify.bundle_format.BundleLimits       a report bundle: bytes, entries, keys
    flopwatch.verify.sampled_format.SampledLimits     a sampled report: bytes, samples, probes,
                                                      sum-tree path nodes
    flopwatch.verify.sampled_format.MAX_CHALLENGE_BYTES  a regulator's challenge
    flopwatch.collector.sampled_report.REPORT_PAGE_LEAVES  leaves read per query while making
                                                      a sampled report
    flopwatch.collector.store.common.MAX_LEAF_PAGE    leaves one page of a scope returns
    flopwatch.collector.config.QueryLimits            query pages, message sizes
    flopwatch.collector.config.ServerLimits           connections, streams per address and
                                                      certificate, bytes in flight, idle and
                                                      handshake timeouts, keepalive, rejection
                                                      log period, metric label values
    flopwatch.collector.config.MetricsSeries          job, run and account series of /metrics
                                                      (recency, count)
    flopwatch.collector.config.MAX_METRICS_SERIES     --metrics-max-series
    flopwatch.collector.rpc.connections.MAX_TRACKED_PEERS  connections remembered as used
    flopwatch.collector.config.MAX_VERIFY_WORKERS     verify worker processes
    flopwatch.collector.config.PendingKeyLimits       keys awaiting approval (node, all, rate)
    flopwatch.collector.config.MAX_THRESHOLD_FLOPS    an alert threshold
    flopwatch.collector.alerts.scopes.MAX_RULES       thresholds in one scope's list (run, account)
    flopwatch.collector.alerts.scopes.DEFAULT_FORECAST_MIN_SPAN_S  a run's span before its rate
                                                      is trusted for forecasts
    flopwatch.collector.config.MAX_DURATION_S         a duration option (--silent-after, ...)
    flopwatch.lineage.MAX_LINEAGE_DEPTH                 ancestors of a run (lineage declarations)
    flopwatch.statements.MAX_RUN_CLAIM_BYTES          a run claim a collector imports
    flopwatch.statements.MAX_RUN_DECLARATION_BYTES    a run lineage declaration read from a log
    flopwatch.collector.config.AccountWindows         per-account UTC day sums kept, windows
    flopwatch.collector.config.MAX_ACCOUNT_DAYS_KEPT  the most day sums an operator may keep
    flopwatch.collector.ingest.ingestor.MAX_SEQUENCE  a chain's sequence numbers
    flopwatch.collector.ingest.ingestor.MAX_COMMIT_ATTEMPTS  retries of a conflicting commit
    flopwatch.collector.enrollment.MAX_TOKEN_TTL_S    lifetime of an enrollment token
    flopwatch.collector.alerts.clocks.NOTE_EVERY_S    store writes of a node clock running ahead
    flopwatch.collector.rpc.paging._MAX_TOKEN_CHARS   a page token
    flopwatch.agent.sender.ACK_WINDOW                 envelopes in flight without an ack
    flopwatch.agent.attribution.registry.MAX_REGISTERED_JOBS  jobs registered on a node
    flopwatch.agent.attribution.registry.MAX_GPUS_PER_JOB     GPUs one registration claims
    flopwatch.agent.attribution.procfs.MAX_PROC_FILE_BYTES    a /proc file read
    flopwatch.agent.attribution.scontrol.MAX_CACHED_JOBS      Slurm jobs' scontrol answers kept
    flopwatch.agent.attribution.scontrol.MAX_SCONTROL_OUTPUT_BYTES  one scontrol answer
    flopwatch.agent.attribution.scontrol.DEFAULT_TIMEOUT_S    one scontrol call (--scontrol-timeout)
    flopwatch.agent.attribution.scontrol.DEFAULT_RETRY_S      scontrol retries after a failure
    flopwatch.agent.attribution.labels.WARN_PERIOD_S          warnings about refused runs/accounts
    flopwatch.agent.attribution.labels.MAX_REMEMBERED_REFUSALS  refused values remembered
    flopwatch.agent.attribution.labels.MAX_ACCOUNT_MAP_ENTRIES  entries of --account-map
    flopwatch.agent.attribution.podresources.MAX_RESPONSE_BYTES  the kubelet's answer
    flopwatch.agent.attribution.kubeapi.MAX_RESPONSE_BYTES  a Kubernetes API answer (LIST page)
    flopwatch.agent.attribution.kubeapi.MAX_EVENT_BYTES   one Kubernetes watch event
    flopwatch.agent.attribution.kubeapi.MAX_ERROR_BYTES   an error answer, read for its message
    flopwatch.agent.attribution.kubeapi.MAX_LIST_ITEMS    objects of one LIST, all pages
    flopwatch.agent.attribution.kubeapi.LIST_PAGE         objects asked for per LIST page
    flopwatch.agent.attribution.kubeapi.DEFAULT_TIMEOUT_S  one Kubernetes API request
    flopwatch.agent.attribution.kubeapi.TOKEN_REREAD_S    the service account token re-read
    flopwatch.agent.attribution.kubeowners.MAX_OWNER_DEPTH  controller references followed
    flopwatch.agent.attribution.kubeowners.MAX_VALUE_CHARS  a pod label or annotation kept
    flopwatch.agent.attribution.kubemeta.KubeSettings     watch timeout, retries, backoff, pods
    flopwatch.agent.attribution.kubemeta.MAX_CACHED_PODS  pods' metadata kept
    flopwatch.agent.attribution.kubemeta.MAX_CACHED_NAMESPACES  namespaces' account labels kept
    flopwatch.agent.attribution.kubemeta.MAX_CACHED_OWNERS  controllers' metadata kept
    flopwatch.agent.attribution.kubemeta.DEFAULT_WATCH_TIMEOUT_S  one watch (timeoutSeconds)
    flopwatch.agent.attribution.kubemeta.DEFAULT_BACKOFF_MAX_S  the wait after API failures
    flopwatch.agent.attribution.kubemeta.DELETED_KEEP_S   a deleted pod's metadata kept
    flopwatch.agent.attribution.kubemeta.MIN_WATCH_S      a watch shorter than this backs off
    flopwatch.agent.attribution.kubemeta.FIRST_LIST_WAIT_S  the wait for the first lists at start
    flopwatch.agent.control.server.MAX_SOCKET_PATH    the control socket's path
    flopwatch.agent.backends.nvml.utilization.MAX_SAMPLE_SKEW_NS  utilization sample skew
    flopwatch.agent.backends.nvml.gpm.MIN_INTERVAL_S  GPM sample spacing (the NVML --interval)
    flopwatch.agent.backends.nvml.gpm.GPM_UNSUPPORTED_STRIKES  GPM failures before a fallback
    flopwatch.agent.backends.nvml.processes.PID_MAX_LIMIT  a pid NVML reports
    flopwatch.cli.agent_cmd.MAX_INTERVALS_PER_RECORD  sampling rounds signed together
    flopwatch.agent.records.MAX_RECORD_BYTES     a record the agent signs (60 KiB: a batch
                                                 larger is split into consecutive records)
    flopwatch.agent.records.MIN_RECORD_BYTES     the least max_record_bytes may be
    flopwatch.collector.config.CollectorConfig   max_envelope_bytes: an envelope the collector
                                                 accepts (default and least: a log entry's
                                                 65,535 bytes; at most max_envelope_bytes here)
    flopwatch.collector.retention.MIN_ARCHIVE_AGE_S   how recent a retention cut-off may be
    flopwatch.collector.retention.RETENTION_PAGE      records archived or pruned at a time
    flopwatch.collector.archive_file.MAX_ARCHIVE_ENTRY_BYTES   one entry of a records archive
    flopwatch.collector.archive_file.MAX_ARCHIVE_HEADER_BYTES  a records archive's header
    flopwatch.statements.MAX_TREE_HEAD_BYTES          a signed tree head
    flopwatch.intoto.statement.StatementLimits        an in-toto statement: bytes, subjects,
                                                      lineage, names
    flopwatch.intoto.dsse_json.MAX_ENVELOPE_SIGNATURES  signatures of a JSON DSSE envelope
    flopwatch.binding.MAX_REPORT_BYTES                a GPU attestation report (and its kin)
    flopwatch.certs.MAX_VALID_DAYS                    a certificate's validity
    flopwatch.merkle.MAX_TREE_SIZE                    the transparency log
    flopwatch.reads.MAX_SMALL_FILE_BYTES              a key, certificate, token or config file
    flopwatch.reads.MAX_JOBS_FILE_BYTES               a JOBS.json file
    flopwatch.reads.MAX_TRACE_BYTES                   a recorded GPU trace
    flopwatch.tlog.note.MAX_NOTE_BYTES                a signed note (checkpoint) read from outside
    flopwatch.tlog.note.MAX_NOTE_SIGNATURES           signature lines of one note
    flopwatch.tlog.checkpoint.MAX_EXTENSION_LINES     a checkpoint's extension lines
    flopwatch.tlog.tiles.MAX_ENTRY_BYTES              a log entry (tlog-tiles: 65,535 bytes)
    flopwatch.tlog.witness.MAX_REQUEST_BYTES          an add-checkpoint request
    flopwatch.tlog.witness.MAX_RESPONSE_BYTES         a witness's answer
    flopwatch.tlog.policy.MAX_POLICY_ITEMS            logs, witnesses and groups of a policy
    flopwatch.tlog.policy.MAX_POLICY_BYTES            a witness policy file
    flopwatch.httpserve.HttpLimits                    tiles and witness HTTP: connections, timeouts
    flopwatch.collector.log.tiles_dir.MAX_TILES_PER_WRITE  tiles written per round
    flopwatch.collector.log.witnessing.DEFAULT_WITNESS_TIMEOUT_S  one add-checkpoint request
    flopwatch.monitor.config.MonitorLimits            the monitor: tile requests per log per
                                                      poll, metric series per kind
    flopwatch.monitor.fetch.FetchLimits               the monitor's HTTP: timeout, entry bytes
    flopwatch.monitor.config.MAX_LOGS                 logs one monitor follows
    flopwatch.monitor.config.MAX_NODE_KEYS_FILE_BYTES a node keys file
    flopwatch.monitor.follower.MAX_SEQUENCE           a chain's sequence numbers (monitor)
    flopwatch.monitor.totals.MAX_THRESHOLD_FLOPS      a regulator's threshold
    flopwatch.webhook_delivery.DeliveryLimits         webhook posts (the monitor's; the collector's
                                                      from WebhookConfig): attempts, queue
    flopwatch.webhook_delivery.MAX_RESPONSE_BYTES     a webhook receiver's answer read
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # One DSSE envelope as received over gRPC or read from a report bundle.
    max_envelope_bytes: int = 1 << 20
    # gRPC message cap (a SubmitRequest carries one envelope plus framing).
    max_grpc_message_bytes: int = (1 << 20) + 4096
    max_signatures_per_envelope: int = 4
    max_gpus_per_attestation: int = 64
    max_intervals_per_attestation: int = 4096
    max_jobs_per_interval: int = 64
    max_gaps_per_attestation: int = 4096
    # Free text (a gap's detail, a GPU's name) and identifiers (node, cluster, GPU, job ids:
    # flopwatch.identifiers says what else an identifier must be).
    max_string_chars: int = 256
    max_identifier_chars: int = 256
    # Longest interval one GpuInterval may cover, how far after the verifier's clock a record's
    # time may end (further: "future", answered retry by the collector), and how long before it
    # (further: "too_old", refused). Checked only where a verifier has a clock (the collector).
    max_interval_ns: int = 3600 * 10**9
    max_clock_skew_ns: int = 300 * 10**9
    max_record_age_ns: int = 400 * 86400 * 10**9
    # Slack on the physical-peak check: the SM clock integral may exceed max clock x time by
    # this fraction (clock readings and interval edges are not perfectly aligned).
    clock_tolerance: float = 0.05
    # Envelopes committed in one database transaction by the collector.
    max_commit_batch: int = 256


DEFAULT_LIMITS = Limits()
