#!/usr/bin/env bash
# Run one config on every worker of a TPU pod, one process per host, started with the trainer's own
# multi-process flags (worker 0 coordinates; the same flags the multi-process tests use).
#   scripts/tpu/run_pod.sh NAME ZONE CONFIG WORKDIR [--config.key=value ...]
# e.g. scripts/tpu/run_pod.sh frac-v4-32 us-central2-b pretrain_1pfrac_vit /mnt/bucket/runs/1pfrac \
#        --config.optim.optimizer=lion --config.lion.comm=mavo_1bit --config.lion.momentum_sync=exp:4
# WORKDIR must be a path that every host sees (e.g. a gcsfuse mount of a bucket, or NFS): checkpoints
# and metrics live there (metrics are written by process 0 only). A preempted pod gets SIGTERM: every
# process saves the step they agree on; run the same command again to resume.
set -euo pipefail
NAME=${1:?usage: run_pod.sh NAME ZONE CONFIG WORKDIR [overrides]}
ZONE=${2:?}
CONFIG=${3:?}
WORKDIR=${4:?}
shift 4
PORT=${FRACTALPRE_PORT:-8476}
# the workers' internal addresses, in worker order (gcloud joins a list with ';')
IFS=';' read -ra ADDRESSES <<< "$(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" \
  --format='value(networkEndpoints[].ipAddress)')"
COORDINATOR="${ADDRESSES[0]}:$PORT"
pids=()
for i in "${!ADDRESSES[@]}"; do
  gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker="$i" --command="
    cd ~/fractalpre && ~/venv/bin/python -m fractalpre.train --distributed --coordinator_address $COORDINATOR \
      --num_processes ${#ADDRESSES[@]} --process_id $i --config $CONFIG --workdir $WORKDIR $*" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
