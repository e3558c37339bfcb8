#!/bin/bash
# Install what the real-Slurm tests need (Debian's slurm-wlm, munge, iproute2, util-linux's nsenter);
# does nothing when they are already there. The tests start and stop their own private cluster
# (tests/slurm_cluster.py), so nothing is configured or started here, and nothing here may call a
# Slurm command that needs a configuration (on a fresh machine there is no slurm.conf yet).
set -euo pipefail

# program -> Debian package that provides it
declare -A package=([sbatch]=slurm-client [slurmctld]=slurmctld [slurmd]=slurmd [munged]=munge
                    [ip]=iproute2 [nsenter]=util-linux)
missing() {
    local prog
    for prog in "${!package[@]}"; do command -v "$prog" >/dev/null || echo "$prog"; done
}

needed=()
for prog in $(missing); do needed+=("${package[$prog]}"); done
if ((${#needed[@]} == 0)); then
    echo "slurm-setup: Slurm, munge, iproute2 and nsenter already installed"
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
# Prove the install from what it must provide, not by asking Slurm (which needs a slurm.conf).
still=$(missing)
if [[ -n $still ]]; then
    echo "slurm-setup: still missing after apt-get install: $still" >&2
    exit 1
fi
echo "slurm-setup: installed ${needed[*]}"
