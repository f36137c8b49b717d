#!/bin/bash
# flopwatch Slurm epilog: tell this node's flopwatch agent that the job has ended. slurm.conf:
#
#   Epilog=/usr/local/libexec/flopwatch/epilog.sh
#
# It never fails or holds up the job's completion: problems are logged and it exits 0.
set -u
# shellcheck source-path=SCRIPTDIR source=flopwatch-slurm-lib.sh
if ! source "$(dirname -- "$0")/flopwatch-slurm-lib.sh" epilog 2>/dev/null; then
    echo "flopwatch-slurm-epilog: flopwatch-slurm-lib.sh missing beside $0; job end not recorded" >&2
    exit 0
fi

if job="$(fw_job_id)"; then
    fw_run end "--job=${job}"
else
    fw_log "SLURM_JOB_ID missing or not a job id; nothing to end"
fi
exit 0
