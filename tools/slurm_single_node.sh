#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine (Debian's slurmd, slurmctld and munge;
# root), so that `srun -n 2 python -m codext train --use-ddp ...` runs under the real srun
# (tests/test_real_launchers.py, with CODEXT_TEST_SRUN=1). Not for a machine that has a
# Slurm of its own: it writes /etc/slurm/slurm.conf and a munge key if none exists.
#
#   bash tools/slurm_single_node.sh && CODEXT_TEST_SRUN=1 python3 -m pytest tests/test_real_launchers.py
set -euo pipefail
if ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmd slurmctld slurm-client munge >/dev/null
fi
node=$(hostname -s)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=codext
SlurmctldHost=$node
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SlurmUser=root
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$node CPUs=$(nproc) RealMemory=$(free -m | awk '/Mem:/{print int($2 * 0.8)}') State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x munged >/dev/null || /usr/sbin/munged --force 2>/dev/null
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 50); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && { sinfo; exit 0; }
    sleep 0.2
done
echo "slurm_single_node: the node did not become idle; see /var/log/slurm/" >&2
exit 1
