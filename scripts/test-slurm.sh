#!/usr/bin/env bash
# `mocoop protocol --slurm` on a real Slurm: starts a single-node cluster on this machine (2 CPUs
# as slots, loopback only, everything in a temporary folder), runs a tiny grid on the generated
# shape world through it (2 methods x 2 seeds, a few epochs), cancels one task in the middle of
# its run, submits the grid again so that the cancelled cell resumes from its checkpoint, and
# checks that the collected table equals a plain local `mocoop protocol` run's. Stops its daemons
# and removes its files on the way out, whatever happens.
#
# Installs Debian's slurm-wlm and munge if missing (scripts/install-system-deps.sh --slurm; root or
# sudo). Uses target/debug/mocoop and the world's write_benchmark example (both built by `cargo
# test --workspace --no-run`, which it runs when they are missing); MOCOOP=path uses another
# mocoop binary. About 50 s once they are built and the packages installed (2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start=$(date +%s)
say() { echo "== $* ($(( $(date +%s) - start ))s)"; }
fail() { echo "test-slurm: $*" >&2; exit 1; }

scripts/install-system-deps.sh --slurm
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

mocoop=${MOCOOP:-$repo/target/debug/mocoop}
world=$repo/target/debug/examples/write_benchmark
if [ ! -x "$mocoop" ] || [ ! -x "$world" ]; then
  say "building mocoop and the world's write_benchmark example"
  cargo test --workspace --no-run -q
fi

tmp=$(mktemp -d /tmp/mocoop-slurm.XXXXXX)
chmod 755 "$tmp"
export SLURM_CONF=$tmp/slurm.conf
cleanup() {
  set +e
  if [ -f "$tmp/slurmctld.pid" ]; then
    scontrol shutdown >/dev/null 2>&1
    for _ in $(seq 50); do
      pgrep -F "$tmp/slurmctld.pid" >/dev/null 2>&1 || pgrep -F "$tmp/slurmd.pid" >/dev/null 2>&1 || break
      sleep 0.2
    done
  fi
  [ -S "$tmp/munge.sock" ] && munged --stop --socket="$tmp/munge.sock" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

say "munge and a one-node Slurm in $tmp"
mungekey --create --keyfile="$tmp/munge.key"
chmod 600 "$tmp/munge.key"
munged --force --socket="$tmp/munge.sock" --key-file="$tmp/munge.key" --log-file="$tmp/munged.log" \
  --pid-file="$tmp/munged.pid" --seed-file="$tmp/munged.seed"
node=$(hostname -s)
port=$(( 20000 + $$ % 20000 ))
mkdir -p "$tmp/state" "$tmp/spool"
cat >"$SLURM_CONF" <<EOF
ClusterName=mocoop-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$(( port + 1 ))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge.sock
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
$sudo env SLURM_CONF="$SLURM_CONF" slurmctld
$sudo env SLURM_CONF="$SLURM_CONF" slurmd
for _ in $(seq 100); do
  [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break
  sleep 0.2
done
[ "$(sinfo -h -o %t)" = idle ] || fail "the node did not come up: $(tail -n 5 "$tmp"/slurm*.log)"

say "the shape world and the grid"
"$world" "$tmp/data" 1 4 1 4 >/dev/null
epochs=4
grid=(protocol base2new --weights "$repo/assets/shapeworld-clip.safetensors" --root "$tmp/data"
  --datasets shapeworld --methods coop,mocoop --seeds 1,2 --shots 4 --epochs "$epochs" --warmup-epochs 0
  --batch-size 4 --workers 1)
# Cell order: coop seed 1, coop seed 2, mocoop seed 1, mocoop seed 2.
cell_dir() { local m=coop; [ "$1" -ge 2 ] && m=mocoop; echo "$tmp/slurm/$m/shapeworld/shots4-seed$(( $1 % 2 + 1 ))"; }

# Waits until job $1 has no task left in the queue.
wait_job() {
  for _ in $(seq 3000); do
    [ -z "$(squeue -h -j "$1" -o %i 2>/dev/null)" ] && return 0
    sleep 0.2
  done
  fail "job $1 did not finish"
}

say "submitting the grid"
cd "$tmp"
job=$("$mocoop" "${grid[@]}" --out "$tmp/slurm" --slurm --partition debug)
[ -n "$job" ] || fail "no job id"

# Cancel the first task found running after its first epoch checkpoint, before it finishes.
cancelled=""
for _ in $(seq 3000); do
  for task in $(squeue -h -j "$job" -t R -o %K 2>/dev/null); do
    dir=$(cell_dir "$task")
    if [ -f "$dir/checkpoints/epoch-001.safetensors" ] && [ ! -f "$dir/results.json" ]; then
      scancel "${job}_${task}"
      cancelled=$task
      break 2
    fi
  done
  sleep 0.1
done
[ -n "$cancelled" ] || fail "no task was caught in the middle of its run"
say "cancelled task $cancelled of job $job"
wait_job "$job"
dir=$(cell_dir "$cancelled")
[ ! -f "$dir/results.json" ] || fail "the cancelled cell finished anyway"
log=$tmp/slurm/logs/cell-$cancelled.log
grep -q "stopping after the current step" "$log" || fail "task $cancelled was not stopped by scancel: $(cat "$log")"
if "$mocoop" "${grid[@]}" --out "$tmp/slurm" --collect 2>"$tmp/collect.err"; then
  fail "--collect succeeded with a cell missing"
fi
grep -q "cell $cancelled, " "$tmp/collect.err" || fail "--collect did not list cell $cancelled: $(cat "$tmp/collect.err")"

say "submitting again: only the cancelled cell runs, resumed"
job=$("$mocoop" "${grid[@]}" --out "$tmp/slurm" --slurm --partition debug)
grep -q "^#SBATCH --array=$cancelled\$" "$tmp/slurm/slurm-base2new.sbatch" \
  || fail "the second array is not cell $cancelled alone: $(grep array "$tmp/slurm/slurm-base2new.sbatch")"
wait_job "$job"
grep -q "resuming from .*checkpoints/" "$log" || fail "cell $cancelled was not resumed: $(cat "$log")"
[ "$(wc -l <"$dir/metrics.jsonl")" = "$epochs" ] || fail "cell $cancelled has not $epochs epochs: $(cat "$dir/metrics.jsonl")"
"$mocoop" "${grid[@]}" --out "$tmp/slurm" --collect >/dev/null 2>"$tmp/collect.err" \
  || fail "--collect: $(cat "$tmp/collect.err"; cat "$tmp"/slurm/logs/*.log)"

say "the same grid run locally"
"$mocoop" "${grid[@]}" --out "$tmp/local" >/dev/null 2>"$tmp/local.err" || fail "$(cat "$tmp/local.err")"
if ! diff "$tmp/local/results-base2new.md" "$tmp/slurm/results-base2new.md"; then
  fail "the tables differ"
fi
cat "$tmp/slurm/results-base2new.md"
say "ok: the Slurm grid's table equals the local run's"
