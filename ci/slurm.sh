#!/usr/bin/env bash
# A real single-node SLURM cluster for CI (Debian's slurmctld, slurmd and munge), and the tiny
# preset run through it with `--profile profiles/slurm`:
#   1. install the packages (if missing) and the `cluster` extra into ./.venv;
#   2. write a slurm.conf sized from this machine into a private directory (SLURM_CONF; /etc
#      is not touched), start munged, slurmctld and slurmd in the foreground as background
#      jobs of this shell, wait for the node to be idle, smoke test with srun;
#   3. simulate the tiny preset once, run the workflow on it with --cores 2 and with
#      --profile profiles/slurm into two work directories, scancel one running drizzle job
#      during the SLURM run (retries resubmit it), compare every product FITS file (cmp);
#   4. stop the daemons by PID (EXIT trap) and print their logs if anything failed.
# Exits non-zero on any failure, loudly also when SLURM cannot start. docs/cluster.md.
#
# Must run as root (it starts the daemons). Settings (environment):
#   SNAKEMAKE_TIMEOUT  seconds each workflow run may take (default 600)
#   KEEP=1             keep the private directory (printed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
SNAKEMAKE_TIMEOUT=${SNAKEMAKE_TIMEOUT:-600}
T0=$(date +%s)
CI_DIR=$(mktemp -d /tmp/mvmflow-slurm.XXXXXX)
chmod 755 "$CI_DIR"
mkdir -p "$CI_DIR"/{etc,state,spool,log,run}
export SLURM_CONF=$CI_DIR/etc/slurm.conf
PIDS=()
NAMES=()

log() { printf '[slurm-ci %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  printf '\n[slurm-ci] ***** FAILED: %s *****\n\n' "$*" >&2
  exit 1
}

# Cleanup within the 30 s that `timeout -k 30` (.ci/run) leaves after its SIGTERM.
stop_all() {
  local rc=$? i pid
  set +e
  # a workflow run still going (interrupted): its `timeout` leads a process group of its own
  for pid in ${RUN_PID:-} ${CHILD:-}; do
    kill -0 "$pid" 2>/dev/null || continue
    log "stopping the workflow run ($pid)"
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null
  done
  # jobs still on the cluster: cancelled while slurmctld and slurmd can still end them
  if [ -n "${CTLD_UP:-}" ] && [ -n "$(timeout 5 squeue -h -t PD,R,CG 2>/dev/null)" ]; then
    log "cancelling the jobs still queued or running"
    timeout 5 scancel --full --user "$(id -un)" 2>/dev/null
    for _ in $(seq 40); do [ -z "$(timeout 5 squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    pid=${PIDS[$i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null && log "killed ${NAMES[$i]} ($pid) after 5 s"
    wait "$pid" 2>/dev/null
  done
  [ ${#PIDS[@]} -gt 0 ] && log "stopped ${NAMES[*]}"
  [ "${LINKED:-0}" = 1 ] && rm -f /etc/slurm/slurm.conf
  if [ "$rc" -ne 0 ]; then
    for f in "$CI_DIR"/log/*; do
      [ -s "$f" ] || continue
      echo "----- last lines of $f -----"
      tail -n 40 "$f"
    done
  fi
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    log "files kept in $CI_DIR"
  else
    rm -rf "$CI_DIR"
  fi
  log "SLURM step: exit $rc after $(( $(date +%s) - T0 ))s"
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 143' TERM INT HUP   # a timeout's SIGTERM: still stop the daemons (EXIT trap)

# start NAME CMD...: a daemon in the foreground as a background job; its PID is recorded.
# In a session of its own (setsid execs it: $! is the daemon), so that a timeout's SIGTERM to
# this script's process group leaves it running until stop_all has cancelled the jobs.
start() {
  local name=$1; shift
  setsid "$@" > "$CI_DIR/log/$name.out" 2>&1 < /dev/null &
  PIDS+=($!)
  NAMES+=("$name")
}

# bounded SECONDS OUTFILE CMD...: run CMD with a time limit, in the background (a signal to
# this script interrupts `wait` at once; CHILD is the `timeout`, stopped by stop_all)
bounded() {
  local secs=$1 out=$2; shift 2
  timeout -k 30 "$secs" "$@" > "$out" 2>&1 < /dev/null &
  CHILD=$!
  local status=0
  wait "$CHILD" || status=$?
  CHILD=
  return "$status"
}

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds, or fail loudly
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" > /dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "SLURM cannot start: $what not ready after ${secs}s"
    sleep 0.2
  done
}

[ "$(id -u)" -eq 0 ] || die "ci/slurm.sh must run as root (it starts slurmctld and slurmd)"

# ---- 1. packages -------------------------------------------------------------------------
if ! command -v slurmctld > /dev/null || ! command -v slurmd > /dev/null \
    || ! command -v sbatch > /dev/null || ! command -v munged > /dev/null; then
  log "installing slurmctld slurmd slurm-client munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
    > "$CI_DIR/log/apt.out" 2>&1 || die "cannot install SLURM packages (see $CI_DIR/log/apt.out)"
fi
log "slurm $(dpkg-query -W -f '${Version}' slurmctld 2>/dev/null || echo '?'),\
 munge $(dpkg-query -W -f '${Version}' munge 2>/dev/null || echo '?')"
if ! "$BIN/python" -c "import snakemake_executor_plugin_slurm" 2> /dev/null; then
  log "installing the cluster extra (snakemake-executor-plugin-slurm) into .venv"
  PYTHONWARNINGS=ignore::UserWarning "$BIN/python" -m pip install --quiet -e ".[cluster]" \
    || die "cannot install the cluster extra"
fi
log "$("$BIN/python" -c 'from importlib.metadata import version as v
print("snakemake", v("snakemake"), "+ snakemake-executor-plugin-slurm",
      v("snakemake-executor-plugin-slurm"))')"

# ---- 2. configure and start the cluster --------------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MB=$(( MEM_MB * 9 / 10 < 20000 ? MEM_MB * 9 / 10 : 20000 ))
cat > "$SLURM_CONF" <<EOF
# written by mvmflow ci/slurm.sh: single-node CI cluster, no cgroups, no accounting
ClusterName=mvmflowci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
StateSaveLocation=$CI_DIR/state
SlurmdSpoolDir=$CI_DIR/spool
SlurmctldPidFile=$CI_DIR/run/slurmctld.pid
SlurmdPidFile=$CI_DIR/run/slurmd.pid
SlurmctldLogFile=$CI_DIR/log/slurmctld.log
SlurmdLogFile=$CI_DIR/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# finished jobs stay visible to squeue (the profile's status command) for 10 minutes
MinJobAge=600
KillWait=5
DefMemPerCPU=500
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
log "slurm.conf: node $HOST, $CPUS CPUs, ${REAL_MB} MB; $SLURM_CONF"
# The jobs' nested srun needs the config at the default path too: the SLURM jobstep plugin
# drops SLURM_CONF from the job's environment. A link, removed at exit; a real site's
# /etc/slurm/slurm.conf is never replaced.
ETC_CONF=/etc/slurm/slurm.conf
if [ -e "$ETC_CONF" ] && ! grep -q '^# written by mvmflow ci/slurm.sh' "$ETC_CONF" 2>/dev/null; then
  die "SLURM cannot start: $ETC_CONF exists and is not ours (this script is for CI machines)"
fi
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$ETC_CONF"
LINKED=1

if munge -n 2> /dev/null | unmunge > /dev/null 2>&1; then
  log "munged already running: reused"
else
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key \
    || die "SLURM cannot start: no munge key and mungekey failed"
  chown munge:munge /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F --force
  wait_for 20 munged sh -c 'munge -n | unmunge'
fi
T_START=$(date +%s)
start slurmctld /usr/sbin/slurmctld -D -f "$SLURM_CONF"
wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
CTLD_UP=1
start slurmd /usr/sbin/slurmd -D -f "$SLURM_CONF"
wait_for 30 "slurmd (node idle)" sh -c 'sinfo -h -o %t | grep -qx idle'
log "cluster up in $(( $(date +%s) - T_START ))s: $(sinfo -h -o '%P %a %D %t %N')"
SMOKE=$(timeout -k 5 60 srun -N1 -n1 -t 1 hostname) || die "SLURM cannot run a job: srun hostname failed"
log "smoke test: srun hostname -> $SMOKE"

# ---- 3. the tiny preset, locally and through SLURM -----------------------------------------
SIM=$CI_DIR/sim
bounded 120 "$CI_DIR/log/simulate.out" "$BIN/mvmflow" simulate --preset tiny --out "$SIM" \
  || die "mvmflow simulate --preset tiny failed"
cat > "$CI_DIR/config.yaml" <<EOF
inputs: $SIM/*_fl?.fits
outdir: results
align: {reference: $SIM/truth/refcat.ecsv}
# one of the preset's four sky cells: the same 14 rules as the whole preset, 31 jobs instead of
# 76 (each SLURM job starts two snakemake processes, about 15 s on 2 cores; docs/cluster.md)
skycells: [skycell-p0081x14y14]
EOF
SMK=("$BIN/snakemake" -s "$ROOT/Snakefile" --configfile "$CI_DIR/config.yaml")

T_LOCAL=$(date +%s)
bounded "$SNAKEMAKE_TIMEOUT" "$CI_DIR/log/local.out" "${SMK[@]}" --directory "$CI_DIR/local" \
  --cores 2 || die "the --cores 2 run failed (see $CI_DIR/log/local.out)"
T_LOCAL=$(( $(date +%s) - T_LOCAL ))
log "--cores 2 run: ${T_LOCAL}s"

# fast polling for CI only (the profile keeps the plugin's gentler defaults for real sites)
T_SLURM=$(date +%s)
timeout -k 30 "$SNAKEMAKE_TIMEOUT" "${SMK[@]}" --directory "$CI_DIR/slurm" \
  --profile "$ROOT/profiles/slurm" --jobs 4 \
  --slurm-init-seconds-before-status-checks 5 --seconds-between-status-checks 5 \
  > "$CI_DIR/log/slurm-run.out" 2>&1 < /dev/null &
RUN_PID=$!

# kill one running drizzle job on purpose: the profile's retries must resubmit it. A job that
# ends on its own just before the scancel is not cancelled: then the next one is tried.
CANCELLED=
TRIED=" "
end=$(( $(date +%s) + SNAKEMAKE_TIMEOUT ))
while [ -z "$CANCELLED" ] && kill -0 "$RUN_PID" 2> /dev/null && [ "$(date +%s)" -lt "$end" ]; do
  ID=$(squeue -h -t RUNNING -o '%i %k' \
       | awk -v tried="$TRIED" '$2 ~ /^rule_drizzle_/ && index(tried, " " $1 " ") == 0 {print $1; exit}' || true)
  if [ -n "$ID" ]; then
    TRIED="$TRIED$ID "
    log "scancel $ID ($(squeue -h -j "$ID" -o '%k %T' 2>/dev/null || true))"
    scancel "$ID" || true
    for _ in $(seq 75); do
      STATE=$(squeue -h --states=all -j "$ID" -o %T 2>/dev/null || true)
      [ "$STATE" = CANCELLED ] && { CANCELLED=$ID; break; }
      [ "$STATE" = COMPLETED ] && { log "job $ID completed before the scancel: trying another"; break; }
      sleep 0.2
    done
  fi
  sleep 0.5
done
rc=0
wait "$RUN_PID" || rc=$?
RUN_PID=
T_SLURM=$(( $(date +%s) - T_SLURM ))
[ "$rc" -eq 0 ] || die "the SLURM run failed with exit $rc after ${T_SLURM}s (see $CI_DIR/log/slurm-run.out)"
[ -n "$CANCELLED" ] || die "no running drizzle job was seen to cancel"
log "--profile profiles/slurm run: ${T_SLURM}s"

# the run's complete log: submissions, the cancellation and the resubmission
SMKLOG=$(ls -t "$CI_DIR"/slurm/.snakemake/log/*.snakemake.log | head -1)
N_SUB=$(grep -c 'has been submitted with SLURM jobid' "$SMKLOG" || true)
N_DONE=$(grep -c '^Finished jobid' "$SMKLOG" || true)
echo "----- SLURM run: log lines (from $SMKLOG) -----"
grep -m 3 'has been submitted with SLURM jobid' "$SMKLOG" || true
echo "..."
grep -E "jobid ${CANCELLED}[ )]|'$CANCELLED'|SLURM-job '$CANCELLED'|Trying to restart" "$SMKLOG" || true
CJOB=$(sed -n "s/^Job \([0-9]*\) has been submitted with SLURM jobid $CANCELLED .*/\1/p" "$SMKLOG")
[ -n "$CJOB" ] || die "the cancelled SLURM job $CANCELLED is not in the log"
RESUB=$(grep -E "^Job $CJOB has been submitted with SLURM jobid" "$SMKLOG" | tail -n +2 || true)
echo "$RESUB"
grep -E "^Finished jobid: $CJOB( |$)" "$SMKLOG" || true
tail -n 3 "$SMKLOG"
echo "-----"
[ -n "$RESUB" ] || die "job $CJOB (SLURM $CANCELLED) was cancelled but never resubmitted"
log "$N_SUB SLURM submissions, $N_DONE jobs finished; SLURM job $CANCELLED (job $CJOB) cancelled and resubmitted"
echo "----- squeue --states=all: every job of this cluster (id, state, CPUs, memory, rule) -----"
squeue -h --states=all -o '%.6i %.10T %.5C %.6m %k' | sort -n
# the retry asks for more memory (rules' mem_mb through by_attempt: attempt 2 = twice)
NEW_ID=$(echo "$RESUB" | tail -1 | sed -n 's/.*with SLURM jobid \([0-9]*\).*/\1/p')
MEM1=$(squeue -h --states=all -j "$CANCELLED" -o %m 2>/dev/null | tr -d ' M')
MEM2=$(squeue -h --states=all -j "$NEW_ID" -o %m 2>/dev/null | tr -d ' M')
log "memory: first attempt ${MEM1}M (SLURM $CANCELLED), retry ${MEM2}M (SLURM $NEW_ID)"
[ -n "$MEM1" ] && [ -n "$MEM2" ] && [ "$MEM2" -eq $((2 * MEM1)) ] \
  || die "the resubmitted job did not ask for twice the memory (${MEM1:-?}M -> ${MEM2:-?}M)"

# ---- 4. bit-identical products -------------------------------------------------------------
cd "$CI_DIR/local"
# every FITS file of the run: the products (skycells/) and the intermediate partials
mapfile -t FILES < <(find results -name '*.fits' | sort)
N_PROD=$(printf '%s\n' "${FILES[@]}" | grep -c '/skycells/' || true)
[ "$N_PROD" -gt 0 ] || die "the --cores 2 run wrote no product FITS file"
DIFF=0
for f in "${FILES[@]}"; do
  cmp -s "$f" "$CI_DIR/slurm/$f" || { echo "DIFFERS: $f"; DIFF=$((DIFF + 1)); }
done
N_SLURM=$(cd "$CI_DIR/slurm" && find results -name '*.fits' | wc -l)
[ "$N_SLURM" -eq ${#FILES[@]} ] || die "${#FILES[@]} FITS files with --cores 2, $N_SLURM with SLURM"
[ "$DIFF" -eq 0 ] || die "$DIFF of ${#FILES[@]} FITS files differ between --cores 2 and SLURM"
log "all ${#FILES[@]} FITS files ($N_PROD products) are byte-identical (--cores 2 vs SLURM)"
cd "$ROOT"
log "SLURM CI passed: --cores 2 run ${T_LOCAL}s, SLURM run ${T_SLURM}s, total $(( $(date +%s) - T0 ))s"
