#!/usr/bin/env bash
# Stop the cluster started by scripts/slurm/start.sh DIR: kill slurmd, slurmctld, munged by pid file.
#   bash scripts/slurm/stop.sh DIR        (DIR defaults to the folder of $SLURM_CONF)
set -uo pipefail
DIR="${1:-$(dirname "${SLURM_CONF:?give the cluster folder or set SLURM_CONF}")}"
log() { echo "[slurm/stop] $*" >&2; }
[ -d "$DIR/run" ] || { log "no cluster folder at $DIR"; exit 1; }

stop_pid() {  # name pidfile: TERM, wait up to 10 s, then KILL; checks /proc/PID/comm first
  local name="$1" pidfile="$2" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$name" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "$name ($pid) ignored TERM, sending KILL"; kill -KILL "$pid"; }
    log "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
}
stop_pid slurmd "$DIR/run/slurmd.pid"
stop_pid slurmctld "$DIR/run/slurmctld.pid"
stop_pid munged "$DIR/run/munged.pid"

# remove the /etc/slurm/slurm.conf link only if it still points at this cluster
if [ -f "$DIR/run/etc_link" ]; then
  if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$(cat "$DIR/run/etc_link")" ]; then rm -f /etc/slurm/slurm.conf; fi
  rm -f "$DIR/run/etc_link"
fi
