#!/bin/bash
# flopwatch Slurm prolog: register the job with this node's flopwatch agent, so that the agent
# attributes the work on the job's GPUs to it. slurm.conf:
#
#   Prolog=/usr/local/libexec/flopwatch/prolog.sh
#   PrologFlags=Alloc      # run at allocation, before any job step starts
#
# What it passes (docs/operator-guide.md, "Slurm"):
#   --job       SLURM_JOB_ID
#   --gpus      SLURM_JOB_GPUS, else CUDA_VISIBLE_DEVICES (indices or GPU-/MIG- UUIDs); left
#               out when neither names GPUs: the agent then goes by the job's processes
#   --precision from the job comment (or the job's --extra): a word flopwatch:precision=VALUE,
#               VALUE one of bf16 fp16 tf32 fp8 fp32 fp64, e.g. `sbatch --comment flopwatch:precision=fp8`
#
# It never fails the job: problems are logged and it exits 0.
set -u
# shellcheck source-path=SCRIPTDIR source=flopwatch-slurm-lib.sh
if ! source "$(dirname -- "$0")/flopwatch-slurm-lib.sh" prolog 2>/dev/null; then
    echo "flopwatch-slurm-prolog: flopwatch-slurm-lib.sh missing beside $0; job not registered" >&2
    exit 0
fi

# GPU list: comma-separated indices or UUIDs, nothing else.
fw_gpus() {
    local value
    for value in "${SLURM_JOB_GPUS:-}" "${CUDA_VISIBLE_DEVICES:-}"; do
        if [[ "$value" =~ ^[A-Za-z0-9][A-Za-z0-9_./:-]*(,[A-Za-z0-9][A-Za-z0-9_./:-]*)*$ ]] &&
            [[ "$value" != "NoDevFiles" ]] && ((${#value} <= 4096)); then
            printf '%s\n' "$value"
            return 0
        fi
    done
    return 1
}

# Declared precision: the first flopwatch:precision=VALUE word of the comment, else of --extra.
fw_precision() {
    local text value
    local word='(^|[[:space:],;])flopwatch:precision=([A-Za-z0-9]+)([[:space:],;]|$)'
    for text in "${SLURM_JOB_COMMENT:-}" "${SLURM_JOB_EXTRA:-}"; do
        if [[ "$text" =~ $word ]]; then
            value="${BASH_REMATCH[2],,}"
            case "$value" in
                bf16 | fp16 | tf32 | fp8 | fp32 | fp64)
                    printf '%s\n' "$value"
                    return 0
                    ;;
                *)
                    fw_log "job ${SLURM_JOB_ID:-?}: unknown precision '${value:0:16}' ignored (bf16 fp16 tf32 fp8 fp32 fp64)"
                    return 1
                    ;;
            esac
        fi
    done
    return 1
}

main() {
    local job gpus precision
    if ! job="$(fw_job_id)"; then
        fw_log "SLURM_JOB_ID missing or not a job id; nothing registered"
        return 0
    fi
    local args=("start" "--job=${job}")
    if gpus="$(fw_gpus)"; then
        args+=("--gpus=${gpus}")
    else
        fw_log "job ${job}: no GPU list in SLURM_JOB_GPUS or CUDA_VISIBLE_DEVICES; registering without --gpus"
    fi
    if precision="$(fw_precision)"; then
        args+=("--precision=${precision}")
    fi
    fw_run "${args[@]}"
}

main
exit 0
