#!/usr/bin/env bash
# A one-node SLURM on this Debian machine, as root, for the SLURM tests (tests/test_slurm_cluster.py)
# and for trying hydra/launcher=slurm by hand (docs/clusters.md):
#
#   sudo bash scripts/slurm_cluster.sh install   # apt-get install slurm-wlm munge slurmdbd mariadb-server
#   sudo bash scripts/slurm_cluster.sh start     # configure and start munged, mariadb, slurmdbd, slurmctld, slurmd
#   sudo bash scripts/slurm_cluster.sh stop      # stop the daemons it started
#
# The cluster: one node (this machine, at most $HIGHTPR_SLURM_CPUS CPUs, default 2) in two CPU
# partitions, `debug` (the default) and `urgent`; a job of `urgent` pre-empts (requeues) a job of
# `debug`, as a higher-priority partition does on a real cluster. slurmdbd keeps accounting, so
# `sacct` answers (submitit reads a finished job's state from it: without it, it waits forever on a
# failed job); `EnforcePartLimits=ALL` refuses an impossible request at submission instead of
# leaving it pending forever. No systemd is needed: the daemons are started directly.
set -euo pipefail

action="${1:-start}"
node="$(hostname -s)"
conf=/etc/slurm
log=/var/log/slurm
state=/var/lib/slurm
cluster=hightpr
dbpass=hightpr-slurmdbd

need_root() {
  if [ "$(id -u)" != 0 ]; then echo "error: run as root (sudo bash $0 $action)" >&2; exit 2; fi
}

install() {
  need_root
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server
}

write_config() {
  local cpus mem
  cpus="$(nproc)"
  cpus=$(( cpus < ${HIGHTPR_SLURM_CPUS:-2} ? cpus : ${HIGHTPR_SLURM_CPUS:-2} ))
  mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
  mem=$(( mem > 2048 ? mem - 1024 : mem ))  # leave the OS some memory
  mkdir -p "$conf" "$log" "$state/slurmctld" "$state/slurmd"
  cat > "$conf/slurm.conf" <<EOF
# written by scripts/slurm_cluster.sh: a one-node test cluster
ClusterName=$cluster
SlurmctldHost=$node
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/slurmctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=300
KillWait=30
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes=$node MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
  cat > "$conf/slurmdbd.conf" <<EOF
# written by scripts/slurm_cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$log/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$conf/slurmdbd.conf"
}

wait_for() {  # wait_for <what> <command...>: up to 60 s
  local what="$1"; shift
  for _ in $(seq 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "error: $what did not come up (see $log/)" >&2
  exit 1
}

start() {
  need_root
  command -v slurmctld >/dev/null || { echo "error: SLURM is not installed: run $0 install" >&2; exit 2; }
  # up = controller answering, node idle, and accounting reachable (submitit needs sacct)
  if scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %T 2>/dev/null | grep -qx idle \
      && sacct -n -X -S now >/dev/null 2>&1; then
    echo "SLURM is already up on $node"; return 0
  fi
  write_config
  mkdir -p /run/munge && chown munge:munge /run/munge
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  wait_for munged munge -n
  pgrep -x mariadbd >/dev/null || pgrep -x mysqld >/dev/null || service mariadb start >/dev/null
  wait_for mariadb mysqladmin ping
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$dbpass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for slurmdbd sacctmgr -n list cluster
  sacctmgr -i -Q add cluster "$cluster" >/dev/null 2>&1 || true
  pgrep -x slurmctld >/dev/null || slurmctld
  wait_for slurmctld scontrol ping
  pgrep -x slurmd >/dev/null || slurmd
  wait_for "the node $node" bash -c "sinfo -h -n $node -o %T | grep -qx idle"
  sinfo
}

stop() {
  need_root
  for daemon in slurmd slurmctld slurmdbd; do
    if [ -f "/run/$daemon.pid" ]; then kill "$(cat "/run/$daemon.pid")" 2>/dev/null || true; fi
  done
  service mariadb stop >/dev/null 2>&1 || true
  if [ -f /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
}

case "$action" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "error: unknown action $action: use install, start or stop" >&2; exit 2 ;;
esac
