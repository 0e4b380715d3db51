#!/usr/bin/env bash
# Run one config on every worker of a TPU pod, one process per host, started with the trainer's own
# multi-process flags (worker 0 coordinates; the same flags the multi-process tests use).
#   scripts/tpu/run_pod.sh NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#   scripts/tpu/run_pod.sh --logs NAME ZONE [WORKER]     # follow a worker's log (default 0); Ctrl-C leaves it running
#   scripts/tpu/run_pod.sh --stop NAME ZONE              # SIGTERM every worker: they save the agreed step and exit
# e.g. scripts/tpu/run_pod.sh frac-v4-32 us-central2-b pretrain_1pfrac_vit /mnt/bucket/runs/1pfrac \
#        --config.optim.optimizer=lion --config.lion.comm=mavo_1bit --config.lion.momentum_sync=exp:4
# Every argument reaches the workers as given (quoted for their shell: spaces and quotes survive). Each worker
# runs detached (setsid nohup), so a dropped ssh session or a closed laptop does not stop it; its output is
# appended to ~/fractalpre_logs/NAME-worker-I.log on that worker, and its pid is in the .pid file beside it.
# WORKDIR must be a path that every host sees (e.g. a gcsfuse mount of a bucket, or NFS): checkpoints and
# metrics live there (metrics are written by process 0 only). A preempted pod gets SIGTERM: every process
# saves the step they agree on; run the same command again to resume.
set -euo pipefail
MODE=run
case "${1:-}" in --logs) MODE=logs; shift;; --stop) MODE=stop; shift;; esac
NAME=${1:?usage: run_pod.sh [--logs|--stop] NAME ZONE [CONFIG WORKDIR [overrides]]}
ZONE=${2:?usage: run_pod.sh [--logs|--stop] NAME ZONE [CONFIG WORKDIR [overrides]]}
LOG="~/fractalpre_logs/$NAME-worker"
ssh_worker() {  # ssh_worker WORKER COMMAND
  gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker="$1" --command="$2"
}
if [ "$MODE" = logs ]; then
  exec gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker="${3:-0}" --command="tail -n +1 -F $LOG-${3:-0}.log"
fi
# the workers' internal addresses, in worker order (gcloud joins a list with ';')
IFS=';' read -ra ADDRESSES <<< "$(gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" \
  --format='value(networkEndpoints[].ipAddress)')"
if [ "$MODE" = stop ]; then
  for i in "${!ADDRESSES[@]}"; do
    ssh_worker "$i" "kill -TERM \$(cat $LOG-$i.pid) && echo worker $i: sent SIGTERM" &
  done
  wait
  exit 0
fi
CONFIG=${3:?usage: run_pod.sh NAME ZONE CONFIG WORKDIR [overrides]}
WORKDIR=${4:?usage: run_pod.sh NAME ZONE CONFIG WORKDIR [overrides]}
shift 4
PORT=${FRACTALPRE_PORT:-8476}
COORDINATOR="${ADDRESSES[0]}:$PORT"
pids=()
for i in "${!ADDRESSES[@]}"; do
  ARGS=$(printf '%q ' --distributed --coordinator_address "$COORDINATOR" --num_processes "${#ADDRESSES[@]}" \
         --process_id "$i" --config "$CONFIG" --workdir "$WORKDIR" "$@")
  ssh_worker "$i" "trap '' HUP; mkdir -p ~/fractalpre_logs && cd ~/fractalpre && { setsid nohup ~/venv/bin/python -m fractalpre.train \
    $ARGS >> $LOG-$i.log 2>&1 < /dev/null & echo \$! > $LOG-$i.pid; echo worker $i: started, pid \$!; }" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "follow: $0 --logs $NAME $ZONE [WORKER]; stop (saving): $0 --stop $NAME $ZONE"
exit $status
