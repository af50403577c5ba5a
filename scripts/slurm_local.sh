#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for testing `mosaicdiff sweep --executor slurm`.
#
#   scripts/slurm_local.sh start   install slurm-wlm and munge if missing (apt-get, as root),
#                                  write slurm.conf, start munged, slurmctld, slurmd and wait
#                                  until `sinfo` shows the node idle
#   scripts/slurm_local.sh stop    stop the daemons this script started
#
# Everything lives under $SLURM_LOCAL_DIR (default /tmp/mosaicdiff-slurm). Clients find the
# cluster through $SLURM_CONF (printed by `start`); /etc/slurm/slurm.conf is linked to it when
# that file does not exist yet, so plain `sinfo` works too.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/mosaicdiff-slurm}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q slurm-wlm munge
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    # The node line as slurmd detects it (CPUs, sockets, cores, memory), so it never drains.
    local node
    node="$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST/")"
    cat >"$CONF" <<CONF
ClusterName=mosaicdiff
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# scancel's grace between SIGTERM (which submitit ignores) and SIGKILL: 30 s by default.
KillWait=5
MailProg=/bin/true
$node NodeAddr=127.0.0.1 NodeHostname=$HOST State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
    if [ ! -e /etc/slurm/slurm.conf ]; then
        as_root mkdir -p /etc/slurm
        as_root ln -s "$CONF" /etc/slurm/slurm.conf
    fi
}

start_munge() {
    if pgrep -x munged >/dev/null; then return; fi
    if [ ! -s /etc/munge/munge.key ]; then
        as_root mkdir -p /etc/munge
        as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    as_root mkdir -p /run/munge /var/log/munge /var/lib/munge
    as_root chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    as_root chmod 0400 /etc/munge/munge.key
    as_root chmod 0755 /run/munge
    as_root runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && return; sleep 0.2; done
    echo "slurm_local: munged did not start" >&2
    exit 1
}

running() {
    [ -s "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null
}

start() {
    install
    running slurmctld || write_conf
    start_munge
    export SLURM_CONF="$CONF"
    running slurmctld || as_root slurmctld -f "$CONF"
    running slurmd || as_root slurmd -f "$CONF"
    for _ in $(seq 120); do
        if sinfo -h -N -o '%t' 2>/dev/null | grep -qx idle; then
            echo "slurm_local: node $HOST idle in partition debug"
            echo "export SLURM_CONF=$CONF"
            return
        fi
        sleep 0.5
    done
    echo "slurm_local: the node did not become idle; see $DIR/log" >&2
    sinfo -N -l >&2 || true
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    exit 1
}

stop() {
    for name in slurmd slurmctld; do
        if running "$name"; then
            local pid
            pid="$(cat "$DIR/$name.pid")"
            as_root kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        fi
        rm -f "$DIR/$name.pid"
    done
    if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
        as_root rm -f /etc/slurm/slurm.conf
    fi
    echo "slurm_local: stopped (munged left running; state kept in $DIR)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
