# shellcheck shell=bash
# Shared by the flopwatch Slurm prolog and epilog: sourced, with the hook's name as $1. Neither
# may fail or hold up a job because flopwatch is down: every problem is logged, the hook exits 0.
#
# Settings (slurmd's environment, e.g. a systemd drop-in for slurmd.service):
#   FLOPWATCH_AGENT_CONTROL_SOCKET  agent control socket (default /run/flopwatch/agent.sock); the
#                            same variable the agent and `flopwatch job` read
#   FLOPWATCH_SLURM_TIMEOUT  seconds one `flopwatch job` call may take (default 10)
#
# Nothing here evaluates job-controlled text (the job comment): it is matched against a fixed
# pattern, and every value passed on is checked against a whitelist and given as one
# `--flag=value` argument, so it can never become a command, a second argument or an option.

FLOPWATCH_SLURM_TAG="flopwatch-slurm-${1:-hook}"

fw_log() {
    # One line to stderr (slurmd's log) and, where there is one, to syslog.
    printf '%s: %s\n' "$FLOPWATCH_SLURM_TAG" "$*" >&2
    if [[ -S /dev/log ]] && command -v logger >/dev/null 2>&1; then
        logger -t "$FLOPWATCH_SLURM_TAG" -p daemon.notice -- "$*" 2>/dev/null || true
    fi
}

# The flopwatch executable: on PATH (slurmd sets none by default), else where the operator guide
# installs it.
fw_find() {
    if command -v flopwatch >/dev/null 2>&1; then
        command -v flopwatch
    elif [[ -x /opt/flopwatch/bin/flopwatch ]]; then
        printf '%s\n' /opt/flopwatch/bin/flopwatch
    else
        return 1
    fi
}

# SLURM_JOB_ID, if it is a job id (digits); array and heterogeneous jobs have their own ids.
fw_job_id() {
    local id="${SLURM_JOB_ID:-}"
    if [[ "$id" =~ ^[0-9]{1,20}$ ]]; then
        printf '%s\n' "$id"
    else
        return 1
    fi
}

# Run `flopwatch job ...` with a time limit; log the outcome. Always returns 0.
fw_run() {
    local fw rc timeout_s="${FLOPWATCH_SLURM_TIMEOUT:-10}"
    [[ "$timeout_s" =~ ^[0-9]{1,4}$ ]] || timeout_s=10
    if ! fw="$(fw_find)"; then
        fw_log "flopwatch not found on PATH or at /opt/flopwatch/bin; job not registered"
        return 0
    fi
    local socket=()
    if [[ -n "${FLOPWATCH_AGENT_CONTROL_SOCKET:-}" ]]; then
        socket=("--socket=${FLOPWATCH_AGENT_CONTROL_SOCKET}")
    fi
    # --source=slurm: the agent names the job slurm:CLUSTER/ID, the same id its Slurm cgroup
    # source gives the job's processes, so one job is never counted under two ids.
    timeout --kill-after=2 "$timeout_s" "$fw" job "$1" --source=slurm "${@:2}" "${socket[@]}" \
        </dev/null >/dev/null 2>&1
    rc=$?
    case "$rc" in
        0) fw_log "ok: flopwatch job $*" ;;
        124 | 137) fw_log "flopwatch job $1 timed out after ${timeout_s}s (agent down?); job goes on" ;;
        *) fw_log "flopwatch job $1 failed with exit code $rc (agent down?); job goes on" ;;
    esac
    return 0
}
