#!/usr/bin/env bash
# Copy this checkout to every worker of a TPU pod and install it with JAX for TPU.
#   scripts/tpu/setup_pod.sh NAME [ZONE]
set -euo pipefail
NAME=${1:?usage: setup_pod.sh NAME [ZONE]}
ZONE=${2:-us-central2-b}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
tar -C "$ROOT" --exclude=.venv --exclude=.git --exclude=demo_out -czf /tmp/fractalpre.tgz .
gcloud compute tpus tpu-vm scp /tmp/fractalpre.tgz "$NAME":~/ --zone="$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command='
  set -e; mkdir -p ~/fractalpre && tar -xzf ~/fractalpre.tgz -C ~/fractalpre
  python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip
  ~/venv/bin/pip install -q "jax[tpu]" -e ~/fractalpre'
