#!/bin/bash
# Install what the real-Slurm tests need (Debian's slurm-wlm, munge, iproute2); does nothing when they
# are already there. The tests start and stop their own private cluster (tests/slurm_cluster.py), so
# nothing is configured or started here.
set -euo pipefail

needed=()
command -v sbatch >/dev/null || needed+=(slurm-wlm)
command -v munged >/dev/null || needed+=(munge)
command -v ip >/dev/null || needed+=(iproute2)
if ((${#needed[@]} == 0)); then
    echo "slurm-setup: slurm-wlm, munge and iproute2 already installed"
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "slurm-setup: need root to install ${needed[*]} (the Slurm tests also run their daemons as root)" >&2
    exit 1
fi
echo "slurm-setup: installing ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
sbatch --version
