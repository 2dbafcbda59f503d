#!/usr/bin/env bash
# The Slurm test of examples/slurm/index-array.sh, on a real one-node Slurm
# that this script starts and stops itself (Debian's slurm-wlm and munge, no
# systemd; a private slurm.conf, munge socket and ports under a temporary
# folder, so a Slurm already on the machine is left alone). Needs root.
#
# It indexes a folder of feature files (its path has a space) with a 4-task
# array in which task 2 fails once (an sgraf-cli wrapper injects it), checks
# that the run is not joined and that its join names shard 2, resubmits that
# task alone (`sbatch --array=2`, no SHARDS), waits for its join, and checks
# that the joined index ranks like one process's index.
#
#   bash tests/slurm/run.sh        # SGRAF_CLI=path/to/sgraf-cli to skip the build
#
# Prints "slurm: 1 passed, 0 failed" (exit 0), "slurm: 0 passed, 1 failed"
# (exit 1), or "slurm: skipped (...)" (exit 0) without Slurm or root.
# SLURM_TEST_TIMEOUT (seconds, default 900) bounds the whole run;
# KEEP=1 keeps the temporary folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
for tool in sbatch squeue scancel sinfo slurmctld slurmd munged; do
    if ! command -v "$tool" >/dev/null; then
        echo "slurm: skipped (apt-get install -y slurm-wlm munge)"
        exit 0
    fi
done
if [ "$(id -u)" != 0 ]; then
    echo "slurm: skipped (starting a one-node Slurm needs root)"
    exit 0
fi
limit=${SLURM_TEST_TIMEOUT:-900}
start=$SECONDS
script="$root/examples/slurm/index-array.sh"

bin=${SGRAF_CLI:-}
if [ -z "$bin" ]; then
    (cd "$root" && cargo build -q -p sgraf-cli)
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/sgraf-cli"
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d /tmp/sgraf-slurm.XXXXXX)"
chmod 755 "$work"
slurm="$work/slurm"
export SLURM_CONF="$slurm/slurm.conf"
watchdog=""

stop_pidfile() {
    local f=$1 pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$watchdog" ]; then kill "$watchdog" 2>/dev/null || true; fi
    if [ -s "$slurm/slurmctld.pid" ]; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            sleep 2
        fi
    fi
    stop_pidfile "$slurm/slurmd.pid"
    stop_pidfile "$slurm/slurmctld.pid"
    stop_pidfile "$work/munge/munged.pid"
    if [ "$rc" = 0 ]; then
        echo "slurm: 1 passed, 0 failed"
    else
        echo "slurm: 0 passed, 1 failed"
    fi
    if [ "${KEEP:-}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "slurm test: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'fail "interrupted or timed out"' INT TERM
# The whole run is bounded: the watchdog ends it (through cleanup) after $limit s.
(
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep "$limit" &
    nap=$!
    wait "$nap"
    echo "slurm test: timed out after $limit s" >&2
    kill -TERM $$
) </dev/null >/dev/null &
watchdog=$!

fail() {
    echo "slurm test FAILED: $*" >&2
    for f in "$slurm/slurmctld.log" "$slurm/slurmd.log" "$work/jobs"/slurm-*.out; do
        [ -e "$f" ] || continue
        echo "---- $f (last lines)" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}

# ---- munge and a one-node Slurm (see ONE-NODE-SLURM notes in the README)
mkdir -p "$work/munge/key" "$slurm/state" "$slurm/spool" "$work/jobs"
dd if=/dev/urandom of="$work/munge/key/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$work/munge"
chmod 755 "$work/munge"
chmod 700 "$work/munge/key"
chmod 400 "$work/munge/key/munge.key"
runuser -u munge -- munged --key-file="$work/munge/key/munge.key" \
    --socket="$work/munge/munge.socket" --pid-file="$work/munge/munged.pid" \
    --log-file="$work/munge/munged.log" --seed-file="$work/munge/munged.seed" ||
    fail "munged did not start: $(cat "$work/munge/munged.log" 2>/dev/null)"
node=$(hostname -s)
port=$((20000 + RANDOM % 20000))
cat >"$SLURM_CONF" <<EOF
ClusterName=sgraftest
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.socket
StateSaveLocation=$slurm/state
SlurmdSpoolDir=$slurm/spool
SlurmctldPidFile=$slurm/slurmctld.pid
SlurmdPidFile=$slurm/slurmd.pid
SlurmctldLogFile=$slurm/slurmctld.log
SlurmdLogFile=$slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$slurm/jobcomp.log
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for _ in $(seq 1 60); do
    state=$(sinfo -h -o %t 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || fail "the node is not idle: '$state'"
echo "slurm test: one-node Slurm up (node $node, port $port)"

# ---- a folder of 24 feature files [36, 40] (the fixture models' size):
# windows of 36 consecutive regions of the committed test_ims.npy ([10, 36,
# 40] float32 after a 128-byte header), so every file differs.
photos="$work/photo folder"
mkdir -p "$photos"
header="{'descr': '<f4', 'fortran_order': False, 'shape': (36, 40), }"
header=$(printf '%-117s' "$header")
src="$root/tests/fixtures/precomp/test_ims.npy"
for j in $(seq 0 23); do
    f="$photos/img $j.npy"
    { printf '\223NUMPY\001\000\166\000'; printf '%s\n' "$header"; } >"$f"
    dd if="$src" iflag=skip_bytes,count_bytes skip=$((128 + 13 * j * 160)) count=$((36 * 160)) \
        bs=4096 status=none >>"$f"
done
[ "$(stat -c %s "$photos/img 23.npy")" = $((128 + 5760)) ] || fail "bad feature file"
cp -r "$photos" "$work/one process"
models="$root/tests/fixtures/sgr $root/tests/fixtures/saf"

# sgraf-cli, except that shard 2 of 4 fails the first time.
mkdir -p "$work/bin dir"
wrapper="$work/bin dir/sgraf-cli"
touch "$work/fault-shard-2"
cat >"$wrapper" <<EOF
#!/bin/sh
for a in "\$@"; do
    if [ "\$a" = 2/4 ] && [ -e $(printf '%q' "$work/fault-shard-2") ]; then
        rm -f $(printf '%q' "$work/fault-shard-2")
        echo "injected failure of shard 2/4" >&2
        exit 1
    fi
done
exec $(printf '%q' "$bin") "\$@"
EOF
chmod +x "$wrapper"

# A resubmission needs SHARDS when the folder remembers no run.
if out=$(cd "$work/jobs" && env SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_COUNT=1 \
    SLURM_ARRAY_TASK_MIN=2 SLURM_ARRAY_TASK_MAX=2 PHOTOS="$photos" MODELS="$models" \
    SGRAF="$wrapper" bash "$script" 2>&1); then
    fail "a lone task without SHARDS ran: $out"
fi
case $out in *"set SHARDS"*) ;; *) fail "no SHARDS message: $out" ;; esac

# Waits until the queue is empty (bounded by the watchdog).
wait_idle() {
    while [ -n "$(squeue -h -o %A)" ]; do
        sleep 2
    done
}
# "ID STATE" of the finished jobs named $1, oldest first.
jobs_named() { squeue -h -t all -n "$1" -o "%A %T" | sort -n; }
manifests() { (cd "$photos/.sgraf-index" && ls manifest*.json 2>/dev/null | sort | tr '\n' ' '); }

export_vars="ALL,PHOTOS=$photos,MODELS=$models,SGRAF=$wrapper"
submit() {
    (cd "$work/jobs" && sbatch --parsable --cpus-per-task=1 --mem=1G --time=10:00 \
        --export="$export_vars" "$@" "$script")
}

# ---- the array, task 2 failing
array=$(submit --array=0-3) || fail "sbatch refused the array"
echo "slurm test: array job $array submitted (4 tasks, task 2 fails once)"
wait_idle
joins=$(jobs_named sgraf-index-join)
[ "$(echo "$joins" | wc -l)" = 1 ] || fail "one join expected: $joins"
join1=${joins%% *}
[ "${joins#* }" = FAILED ] || fail "the first join should fail: $joins"
grep -q "injected failure" "$work/jobs/slurm-${array}_2.out" || fail "task 2 did not fail"
grep -q "shard(s) 2 of 4" "$work/jobs/slurm-$join1.out" || fail "the join did not name shard 2"
got=$(manifests)
[ "$got" = "manifest-shard-0-of-4.json manifest-shard-1-of-4.json manifest-shard-3-of-4.json " ] ||
    fail "after the failed task: manifests $got"
echo "slurm test: tasks 0, 1, 3 done, task 2 failed; join $join1 failed, naming shard 2"

# ---- task 2 alone, as the example's header says; its join finishes the run
again=$(submit --array=2) || fail "sbatch refused the resubmission"
echo "slurm test: resubmitted task 2 as array job $again"
wait_idle
grep -q "shard 2/4" "$work/jobs/slurm-${again}_2.out" || fail "the resubmitted task was not shard 2/4"
joins=$(jobs_named sgraf-index-join)
[ "$(echo "$joins" | wc -l)" = 2 ] || fail "two joins expected: $joins"
join2=$(echo "$joins" | tail -1)
[ "${join2#* }" = COMPLETED ] || fail "the second join did not complete: $joins"
join2=${join2%% *}
grep -q "0 new, 0 changed, 0 removed, 24 unchanged" "$work/jobs/slurm-$join2.out" ||
    fail "the join re-encoded images: $(cat "$work/jobs/slurm-$join2.out")"
[ "$(manifests)" = "manifest.json " ] || fail "not joined: $(manifests)"
[ ! -e "$photos/.sgraf-slurm/shards" ] || fail "the run's state was not cleared"
echo "slurm test: join $join2 completed, nothing re-encoded"

# ---- the joined index ranks like one process's
"$bin" index -m "$root/tests/fixtures/sgr" -m "$root/tests/fixtures/saf" \
    --images "$work/one process" >/dev/null 2>&1 || fail "one-process index failed"
# "FILE SCORE" lines of `rank --json` (its rows are one line of sorted keys:
# "file", "rank", "score"), the folder's prefix taken off.
ranking() {
    "$bin" rank --images "$1" --query "$2" --json \
        -m "$root/tests/fixtures/sgr" -m "$root/tests/fixtures/saf" 2>/dev/null |
        grep -o '"\(file\|score\)":[^,}]*' | sed -e 's/^"[a-z]*"://' -e "s|$1/||" | paste -d ' ' - -
}
for q in "Children in the water, playing." "a dog runs on the grass"; do
    a=$(ranking "$photos" "$q")
    b=$(ranking "$work/one process" "$q")
    [ "$(echo "$a" | wc -l)" = 24 ] || fail "rank gave $(echo "$a" | wc -l) rows, not 24: $a"
    # The same files in the same order, the same scores (to 1e-6: images
    # encoded in other batches can differ in the last bit).
    paste -d '\t' <(echo "$a") <(echo "$b") | awk -F'\t' '
        { na = split($1, x, " "); nb = split($2, y, " ")
          fa = substr($1, 1, length($1) - length(x[na]) - 1)
          fb = substr($2, 1, length($2) - length(y[nb]) - 1)
          d = x[na] - y[nb]; if (d < 0) d = -d
          if (fa != fb || d > 1e-6) { print "row " NR ": " $1 " against " $2; bad = 1 } }
        END { exit bad }' >&2 || fail "the joined index ranks otherwise than one process's for '$q'"
done
echo "slurm test: the joined index ranks like one process's (24 images, 2 queries); $((SECONDS - start)) s"
