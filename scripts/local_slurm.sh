#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for tests and trying the batch example.
#   bash scripts/local_slurm.sh start DIR    # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   export SLURM_CONF=DIR/slurm.conf         # then sbatch/srun/sinfo talk to it
#   bash scripts/local_slurm.sh stop DIR     # stops the daemons started from DIR
# Needs (Debian): slurmctld slurmd slurm-client munge libpmix-dev, and root.
set -euo pipefail
action=${1:?usage: local_slurm.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: local_slurm.sh start|stop DIR}" && cd "$2" && pwd)

stop() {
    for name in slurmd slurmctld; do
        if [ -f "$dir/$name.pid" ]; then
            kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
        fi
    done
    for _ in $(seq 50); do
        alive=0
        for name in slurmd slurmctld; do
            [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    if [ -f "$dir/munged.pid" ]; then kill "$(cat "$dir/munged.pid")" 2>/dev/null || true; fi
    if [ -f "$dir/munge_dir" ]; then rm -rf "$(cat "$dir/munge_dir")"; fi
}

if [ "$action" = stop ]; then stop; exit 0; fi
[ "$action" = start ] || { echo "local_slurm.sh: unknown action $action" >&2; exit 2; }
for exe in slurmctld slurmd munged sinfo; do
    command -v "$exe" >/dev/null || { echo "local_slurm.sh: $exe not found (apt-get install slurmctld slurmd slurm-client munge libpmix-dev)" >&2; exit 3; }
done

# munge: one daemon with its own socket, in a directory the munge user can reach
# (DIR itself may sit under a private directory such as pytest's tmp_path)
munge_dir=$(mktemp -d /tmp/gapfit-munge.XXXXXX)
chmod 755 "$munge_dir"
chown munge:munge "$munge_dir"
echo "$munge_dir" > "$dir/munge_dir"
if [ ! -s /etc/munge/munge.key ]; then
    (mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null)
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
su -s /bin/sh munge -c "/usr/sbin/munged --socket=$munge_dir/munge.socket --pid-file=$munge_dir/munged.pid --log-file=$munge_dir/munged.log --seed-file=$munge_dir/munged.seed --force"
cp "$munge_dir/munged.pid" "$dir/munged.pid"

host=$(hostname -s)
# the CPUs slurmd itself detects (else the hardware count), never plain nproc: GNU nproc honours
# OMP_NUM_THREADS, and a node configured with fewer CPUs than it has makes multi-task jobs pend
cpus=$(slurmd -C 2>/dev/null | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' | head -n 1)
[ -n "$cpus" ] || cpus=$(nproc --all)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
mkdir -p "$dir/state" "$dir/spool"
cat > "$dir/slurm.conf" <<CONF
ClusterName=gapfit-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_dir/munge.socket
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=pmix
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)'; then
        echo "local SLURM up: export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "local_slurm.sh: the node did not become idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2
stop
exit 4
