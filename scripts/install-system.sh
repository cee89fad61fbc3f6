#!/usr/bin/env bash
# Install the Debian packages the test suite needs: munge + slurmctld + slurmd + client (real SLURM).
set -euo pipefail
need=()
for bin in munged slurmctld slurmd sbatch; do command -v "$bin" >/dev/null || need+=("$bin"); done
if [ ${#need[@]} -eq 0 ]; then echo "system packages present"; exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing ${need[*]}: run as root, or: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
echo "installed: $(slurmctld -V)"
