#!/usr/bin/env bash
# Index a large folder with a Slurm job array: one task per shard indexes its
# part of the folder (extracting its photos' region features first, when
# DETECTOR is given) into the same folder on a shared filesystem; a join job
# then combines the shards' manifests into one (nothing is re-encoded).
#
#   sbatch --export=ALL,PHOTOS=/shared/photos,MODELS="/shared/models/f30k_sgr /shared/models/f30k_saf",DETECTOR=/shared/models/butd-r101-k36 \
#       examples/slurm/index-array.sh
#
# PHOTOS   the folder: photos and/or region-feature files (.npy, .npz, .safetensors)
# MODELS   model folders or Hub ids, separated by spaces
# DETECTOR the converted detector folder; only needed for photos
# SGRAF    the sgraf-cli binary (default: sgraf-cli on the PATH)
# SHARDS   the number of shards; by default the size of the first submission's
#          array (--array=0-15 gives 16), remembered for resubmissions
# STATE    where the tasks leave their markers (default: PHOTOS/.sgraf-slurm)
#
# The shards are deterministic (a hash of each file's name modulo SHARDS), so
# a task that failed is simply resubmitted with the same variables:
#
#   sbatch --array=5 --export=ALL,PHOTOS=...,MODELS=...,DETECTOR=... examples/slurm/index-array.sh
#
# reruns exactly shard 5 of 16 (several at once: --array=5,9). Every array
# submission, first or resubmitted, is followed by a join job (`afterany`: it
# starts when every task of that array has ended, failed or not). The join
# checks that every shard is done; if one is missing it exits 1 naming it and
# the command that reruns it, and the resubmitted task's own join then finishes
# the run. No step is manual beyond resubmitting what failed.
#SBATCH --job-name=sgraf-index
#SBATCH --array=0-15
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=12:00:00
set -euo pipefail

: "${PHOTOS:?set PHOTOS to the folder to index}"
: "${MODELS:?set MODELS to the model folders or Hub ids, space-separated}"
SGRAF=${SGRAF:-sgraf-cli}
DETECTOR=${DETECTOR:-}
STATE=${STATE:-$PHOTOS/.sgraf-slurm}

models=()
for m in $MODELS; do models+=(-m "$m"); done
detector=()
if [ -n "$DETECTOR" ]; then detector=(--detector "$DETECTOR"); fi

# The join: run by the job each array submission queues (see below).
if [ "${1:-}" = join ]; then
    N=${SHARDS:?the join needs SHARDS}
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock 9
    if [ ! -e "$STATE/shards" ]; then
        echo "sgraf join: nothing to join in $PHOTOS (another join finished the run)"
        exit 0
    fi
    missing=()
    for ((i = 0; i < N; i++)); do
        if [ ! -e "$STATE/done-$i-of-$N" ] ||
            [ ! -e "$PHOTOS/.sgraf-index/manifest-shard-$i-of-$N.json" ]; then
            missing+=("$i")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        list=$(IFS=,; echo "${missing[*]}")
        echo "sgraf join: shard(s) $list of $N of $PHOTOS not complete (failed, or still" \
            "running in another job): nothing joined. Resubmit them with the same variables:" \
            "sbatch --array=$list ... examples/slurm/index-array.sh (their own join follows)." >&2
        exit 1
    fi
    "$SGRAF" index "${models[@]}" --images "$PHOTOS" ${detector[@]+"${detector[@]}"}
    rm -rf "$STATE"/done-*-of-* "$STATE"/join-* "$STATE/shards"
    echo "sgraf join: $N shards joined into $PHOTOS/.sgraf-index"
    exit 0
fi

I=${SLURM_ARRAY_TASK_ID:?run this script with sbatch --array}
count=${SLURM_ARRAY_TASK_COUNT:?run this script with sbatch --array}
# The shard count: SHARDS, else that of the unfinished run this folder
# remembers (a resubmission), else the array's size (a first submission:
# --array=0-N-1). SLURM_ARRAY_TASK_COUNT alone would be 1 on `--array=5`.
whole=no
if [ "${SLURM_ARRAY_TASK_MIN:-}" = 0 ] && [ "${SLURM_ARRAY_TASK_MAX:-}" = $((count - 1)) ] &&
    [ "$count" -ge 2 ]; then
    whole=yes
fi
previous=""
if [ -e "$STATE/shards" ]; then previous=$(cat "$STATE/shards"); fi
if [ -n "${SHARDS:-}" ]; then
    N=$SHARDS
elif [ -n "$previous" ]; then
    if [ "$whole" = yes ] && [ "$count" != "$previous" ]; then
        echo "sgraf: $PHOTOS has an unfinished run of $previous shards ($STATE/shards) and this" \
            "array has $count tasks: set SHARDS=$previous to rerun tasks of that run, or" \
            "SHARDS=$count to start over with $count shards" >&2
        exit 2
    fi
    N=$previous
elif [ "$whole" = yes ]; then
    N=$count
else
    echo "sgraf: set SHARDS to the shard count of the first submission (its --array size) to" \
        "rerun task $I alone, e.g. sbatch --array=$I --export=ALL,SHARDS=16,PHOTOS=... examples/slurm/index-array.sh" >&2
    exit 2
fi
case $N in '' | *[!0-9]*) echo "sgraf: SHARDS must be a number, found '$N'" >&2; exit 2 ;; esac
if [ "$I" -ge "$N" ]; then
    echo "sgraf: task $I is outside the $N shards (0 to $((N - 1)))" >&2
    exit 2
fi

mkdir -p "$STATE"
tmp="$STATE/.tmp-$SLURM_JOB_ID"
echo "$N" >"$tmp" && mv -f "$tmp" "$STATE/shards"
# The join runs this script again, so it keeps a copy on the shared filesystem.
cp "${BASH_SOURCE[0]}" "$tmp" && mv -f "$tmp" "$STATE/index-array.sh"
rm -f "$STATE/done-$I-of-$N"

# The first task of each array submission to start queues that array's join.
if mkdir "$STATE/join-$SLURM_ARRAY_JOB_ID" 2>/dev/null; then
    wrap=$(printf '%q ' env "PHOTOS=$PHOTOS" "MODELS=$MODELS" "DETECTOR=$DETECTOR" \
        "SGRAF=$SGRAF" "STATE=$STATE" "SHARDS=$N" bash "$STATE/index-array.sh" join)
    if job=$(sbatch --parsable --dependency=afterany:"$SLURM_ARRAY_JOB_ID" \
        --job-name=sgraf-index-join --cpus-per-task=2 --mem=4G --time=1:00:00 --wrap "$wrap"); then
        echo "sgraf: the join is job $job (after array job $SLURM_ARRAY_JOB_ID)"
    else
        # Indexing goes on; the join can be run by hand once the array ended.
        echo "sgraf: could not submit the join job; once array job $SLURM_ARRAY_JOB_ID has" \
            "ended, run: sbatch --wrap '$wrap'" >&2
    fi
fi

# With --shard each task indexes (and, with a detector, extracts) only its part.
"$SGRAF" index "${models[@]}" --images "$PHOTOS" ${detector[@]+"${detector[@]}"} --shard "$I/$N"
echo "$SLURM_JOB_ID" >"$tmp" && mv -f "$tmp" "$STATE/done-$I-of-$N"
