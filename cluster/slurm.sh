#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's slurm-wlm and munge: `make slurm` / `make slurm-stop`.
#   cluster/slurm.sh start   install where missing (apt, as root), write the configuration for this machine's
#                            cores and memory, start munged, slurmctld and slurmd, wait until sinfo shows it idle
#   cluster/slurm.sh stop    stop the three daemons
#   cluster/slurm.sh status  sinfo's line for the node; exit 1 when the cluster does not answer
# Without systemd or cgroups (containers, CI): processes are tracked by linuxproc, tasks are not confined, and
# accounting is off. A configuration that nnlab did not write (a real cluster's node) is never overwritten.
set -euo pipefail
CONF=/etc/slurm/slurm.conf
MARK="# Written by nnlab (cluster/slurm.sh)"
say() { echo "slurm: $*"; }
die() { echo "slurm: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "starting a one-node cluster needs root (its daemons run as root): sudo make slurm"; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  command -v apt-get >/dev/null || die "slurmctld, slurmd or munged is missing and there is no apt-get; install SLURM and munge"
  say "installing Debian's slurm-wlm and munge"
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
    || die "could not install slurm-wlm and munge with apt-get; install them and run make slurm again"
}

configure() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF was not written by nnlab (a real cluster's configuration?); it is left alone: submit from that cluster instead"
  fi
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc --all)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # MB, leaving a tenth to the system
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > "$CONF.partial" <<CONF
$MARK: a one-node cluster on $host ($cpus cores, $mem MB).
ClusterName=nnlab
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Accounting is off: sacct has nothing to read (nnlab quiets submitit's repeated warning about it).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
InactiveLimit=0
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  mv "$CONF.partial" "$CONF"
}

running() { pgrep -x "$1" >/dev/null; }

start_munge() {
  running munged && return
  [ -s /etc/munge/munge.key ] || mungekey --create --force >/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged || die "munged did not start; see /var/log/munge/munged.log"
}

wait_idle() {
  local state
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
    case "$state" in
      idle|mix|alloc) say "node $(hostname -s) is $state ($(nproc --all) cores): sbatch and hydra/launcher=slurm work"; return ;;
      down*|drain*|fail*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  die "the node did not become idle within 60 s (sinfo says '${state:-nothing}'); see /var/log/slurm/slurmctld.log and slurmd.log"
}

start() {
  need_root
  install
  configure
  start_munge
  running slurmctld || slurmctld || die "slurmctld did not start; see /var/log/slurm/slurmctld.log"
  running slurmd || slurmd || die "slurmd did not start; see /var/log/slurm/slurmd.log"
  wait_idle
}

stop() {
  local name
  for name in slurmd slurmctld munged; do
    pkill -x "$name" 2>/dev/null || continue
    for _ in $(seq 30); do running "$name" || break; sleep 1; done
    running "$name" && pkill -9 -x "$name"
  done
  say "stopped"
}

status() {
  sinfo -h -N -o "%N %t %c cores %m MB" 2>/dev/null | grep . || die "no SLURM cluster answers (make slurm starts one)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: cluster/slurm.sh start|stop|status" ;;
esac
