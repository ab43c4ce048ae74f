#!/usr/bin/env bash
# Data-parallel training on a server: bash train_ddp.sh [flags of python -m codext train]
#
# Starts one worker per visible GPU (CPU workers where there is none: NPROCS of them,
# default 1) through launch_ddp.py. Settings from the environment, all optional:
#   DATASET_PATH   COD dataset folder (default: the built-in synthetic set)
#   NPROCS         CPU workers when there is no GPU (default 1)
#   MASTER_PORT    rendezvous port (default: a free port chosen by codext)
#   NCCL_TIMEOUT   seconds a collective may wait for the other workers (default 600)
#   PYTHON         interpreter (default python3)
# Flags given on the command line win over these.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
args=()
if [[ -n "${DATASET_PATH:-}" ]]; then args+=(--dataset-path "$DATASET_PATH"); fi
if [[ -n "${NPROCS:-}" ]]; then args+=(--nprocs "$NPROCS"); fi
if [[ -n "${MASTER_PORT:-}" && -z "${RANK:-}" && -z "${SLURM_PROCID:-}" ]]; then
  args+=(--master-port "$MASTER_PORT")
fi
exec "${PYTHON:-python3}" "$here/launch_ddp.py" "${args[@]}" "$@"
