#!/usr/bin/env bash
# Run one config on every worker of a TPU pod (one process per host; jax.distributed finds its peers).
#   scripts/tpu/run_pod.sh NAME ZONE CONFIG WORKDIR [--config.key=value ...]
# e.g. scripts/tpu/run_pod.sh frac-v4-32 us-central2-b configs/pretrain_1pfrac_vit.py /mnt/bucket/runs/1pfrac \
#        --config.optim.optimizer=lion --config.lion.comm=mavo_1bit --config.lion.momentum_sync=exp:4
# WORKDIR must be a path that every host sees (e.g. a gcsfuse mount of a bucket, or NFS): checkpoints
# and metrics live there (metrics are written by process 0 only).
set -euo pipefail
NAME=${1:?usage: run_pod.sh NAME ZONE CONFIG WORKDIR [overrides]}
ZONE=${2:?}
CONFIG=${3:?}
WORKDIR=${4:?}
shift 4
gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="
  cd ~/fractalpre && ~/venv/bin/python -m fractalpre.train --distributed --config $CONFIG --workdir $WORKDIR $*"
