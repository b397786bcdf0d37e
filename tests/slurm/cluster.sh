#!/usr/bin/env bash
# A single-node SLURM on this machine for the `slurm` tests: munged, slurmctld and slurmd with their own
# config, ports, munge key and socket, state and spool, all under one folder.
#
#   tests/slurm/cluster.sh start    # as root; installs slurm-wlm and munge with apt when missing
#   export SLURM_CONF=$(tests/slurm/cluster.sh conf)
#   tests/slurm/cluster.sh stop     # stops exactly the daemons that `start` started (by PID), removes the folder
#
# The folder is $DIT_SLURM_DIR (default /tmp/dit-slurm); the ports $DIT_SLURM_PORT and the next one
# (default 16817). No cgroups: proctrack/linuxproc, task/none; select/cons_tres on CPUs and memory, so
# jobs of one CPU each share the node; accounting off. JobRequeue=1 and a munge credential that expires
# after 10 s let a requeued job start again within seconds (the default, 120 s, would make it wait).
set -euo pipefail

ROOT=${DIT_SLURM_DIR:-/tmp/dit-slurm}
PORT=${DIT_SLURM_PORT:-16817}
READY_TIMEOUT_S=30

install_missing() {
    if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge > /dev/null
    fi
}

write_config() {
    local node cpus mem_mb
    node=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
    cat > "$ROOT/slurm.conf" <<EOF
ClusterName=dit-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$ROOT/munge/munge.socket,cred_expire=10
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
KillWait=10
ReturnToService=2
DefMemPerCPU=$((mem_mb / cpus))
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_idle() {
    local waited=0
    until sinfo -h -o %T 2> /dev/null | grep -qx idle; do
        if (( waited >= READY_TIMEOUT_S * 10 )); then
            echo "cluster.sh: the node is not idle after ${READY_TIMEOUT_S} s; see $ROOT/log" >&2
            sinfo >&2 || true
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

start() {
    if [[ -e "$ROOT/slurmctld.pid" ]]; then
        echo "cluster.sh: a cluster is already started in $ROOT; stop it first" >&2
        return 1
    fi
    install_missing
    mkdir -p "$ROOT"/{munge,state,spool,log}
    chmod 700 "$ROOT" "$ROOT/munge"
    head -c 1024 /dev/urandom > "$ROOT/munge/munge.key"
    chmod 400 "$ROOT/munge/munge.key"
    munged --force --socket="$ROOT/munge/munge.socket" --key-file="$ROOT/munge/munge.key" \
        --pid-file="$ROOT/munge/munged.pid" --log-file="$ROOT/log/munged.log" --seed-file="$ROOT/munge/seed"
    write_config
    export SLURM_CONF=$ROOT/slurm.conf
    slurmctld -i
    slurmd
    wait_idle
    echo "cluster.sh: SLURM up in $ROOT (export SLURM_CONF=$SLURM_CONF)" >&2
}

stop_pid_file() {
    local file=$1 pid waited=0
    [[ -e "$file" ]] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2> /dev/null; then
        while kill -0 "$pid" 2> /dev/null && (( waited < 100 )); do
            sleep 0.1
            waited=$((waited + 1))
        done
        kill -9 "$pid" 2> /dev/null || true
    fi
    rm -f "$file"
}

stop() {
    [[ -d "$ROOT" ]] || return 0
    stop_pid_file "$ROOT/slurmd.pid"
    stop_pid_file "$ROOT/slurmctld.pid"
    stop_pid_file "$ROOT/munge/munged.pid"
    rm -rf "$ROOT"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    conf) echo "$ROOT/slurm.conf" ;;
    *) echo "usage: $0 start|stop|conf" >&2; exit 2 ;;
esac
