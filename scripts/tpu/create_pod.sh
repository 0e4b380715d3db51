#!/usr/bin/env bash
# Create a TPU VM pod slice for fractalpre.
#   scripts/tpu/create_pod.sh NAME [ZONE] [ACCELERATOR] [VERSION]
# e.g. scripts/tpu/create_pod.sh frac-v4-32 us-central2-b v4-32 tpu-ubuntu2204-base
set -euo pipefail
NAME=${1:?usage: create_pod.sh NAME [ZONE] [ACCELERATOR] [VERSION]}
ZONE=${2:-us-central2-b}
ACCELERATOR=${3:-v4-32}
VERSION=${4:-tpu-ubuntu2204-base}
gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" --version="$VERSION"
