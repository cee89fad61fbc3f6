#!/usr/bin/env bash
# Start a single-node SLURM cluster (munged + slurmctld + slurmd) in a folder of its own.
#
#   eval "$(bash scripts/slurm/start.sh [DIR])"     # prints: export SLURM_CONF=DIR/slurm.conf
#   ...  sbatch / squeue / snakemake --profile slurm ...
#   bash scripts/slurm/stop.sh DIR
#
# Needs root and the Debian packages of scripts/install-system.sh. Environment knobs:
#   SLURM_CTLD_PORT / SLURMD_PORT (default 6817 / 6818), SLURM_DEF_MEM_PER_CPU (MB, default 2000),
#   SLURM_LINK_ETC=0 to skip the /etc/slurm/slurm.conf symlink (needed by snakemake's jobstep plugin,
#   which strips every SLURM_* variable, SLURM_CONF included, before its nested srun).
# Everything but the export line goes to stderr.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${1:-$(mktemp -d /tmp/avfusion-slurm.XXXXXX)}"
mkdir -p "$DIR"/{state,spool,run,log,munge}
DIR="$(cd "$DIR" && pwd)"
log() { echo "[slurm/start] $*" >&2; }

for bin in munged mungekey slurmctld slurmd sinfo; do
  command -v "$bin" >/dev/null || { log "missing $bin: run scripts/install-system.sh as root"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "must run as root (SlurmUser=root, munged key ownership)"; exit 1; }
if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
  log "a cluster is already running in $DIR"; echo "export SLURM_CONF=$DIR/slurm.conf"; exit 0
fi

CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/munge.socket.2"
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
sed -e "s#@DIR@#$DIR#g" -e "s#@MUNGE_SOCKET@#$SOCKET#g" -e "s#@CPUS@#$(nproc)#g" \
    -e "s#@MEM_MB@#$MEM_MB#g" -e "s#@CTLD_PORT@#${SLURM_CTLD_PORT:-6817}#g" \
    -e "s#@SLURMD_PORT@#${SLURMD_PORT:-6818}#g" -e "s#@DEF_MEM_PER_CPU@#${SLURM_DEF_MEM_PER_CPU:-2000}#g" \
    "$HERE/slurm.conf.template" > "$CONF"

# munge: our own key and socket, so a system munged (if any) is left alone
[ -f "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" >&2
chmod 600 "$DIR/munge/munge.key"
chmod 700 "$DIR/munge"
munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
       --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"

if [ "${SLURM_LINK_ETC:-1}" = 1 ]; then
  mkdir -p /etc/slurm
  if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
    log "/etc/slurm/slurm.conf is a real file: leaving it alone (snakemake's jobstep srun may not find our config)"
  else
    ln -sfn "$CONF" /etc/slurm/slurm.conf
    echo "$CONF" > "$DIR/run/etc_link"
  fi
fi

export SLURM_CONF="$CONF"
slurmctld -f "$CONF" -i
slurmd -f "$CONF" -N localhost

# wait until the node is idle (or mixed/allocated if jobs survived a restart)
for _ in $(seq 1 60); do
  state="$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)"
  case "$state" in idle|mix|alloc) log "node localhost is $state ($DIR)"; echo "export SLURM_CONF=$CONF"; exit 0;; esac
  sleep 0.5
done
log "node never became idle (last state: '${state:-none}'); logs in $DIR/log"; tail -5 "$DIR/log/slurmctld.log" >&2 || true
exit 1
