#!/usr/bin/env bash
# Index a large photo folder with a Slurm job array: one task per shard
# extracts its photos' region features and indexes them, into the same folder
# on a shared filesystem; a last job, started when every task has succeeded,
# joins the shards into one manifest (nothing is re-encoded).
#
#   sbatch --export=ALL,PHOTOS=/shared/photos,MODELS="/shared/models/f30k_sgr /shared/models/f30k_saf",DETECTOR=/shared/models/butd-r101-k36 \
#       examples/slurm/index-array.sh
#
# Shards are deterministic (a hash of each file's name modulo N), so a task
# that fails can simply be resubmitted: `sbatch --array=5 ...`.
#SBATCH --job-name=sgraf-index
#SBATCH --array=0-15
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=12:00:00
set -euo pipefail

: "${PHOTOS:?set PHOTOS to the photo folder}"
: "${MODELS:?set MODELS to the model folders or Hub ids, space-separated}"
: "${DETECTOR:?set DETECTOR to the converted detector folder}"
SGRAF=${SGRAF:-sgraf-cli}
N=${SLURM_ARRAY_TASK_COUNT:?run this script with sbatch --array}
I=${SLURM_ARRAY_TASK_ID:?run this script with sbatch --array}

models=()
for m in $MODELS; do models+=(-m "$m"); done

# rank and index extract photos into PHOTOS/.sgraf-regions/ through the
# detector; with --shard each task extracts and indexes only its own part.
"$SGRAF" index "${models[@]}" --images "$PHOTOS" --detector "$DETECTOR" --shard "$I/$N"

# Task 0 submits the join, which Slurm starts once every task of the array succeeded.
if [ "$I" -eq 0 ]; then
    sbatch --dependency=afterok:"$SLURM_ARRAY_JOB_ID" --job-name=sgraf-index-join \
        --cpus-per-task=2 --mem=4G --time=1:00:00 \
        --wrap "$SGRAF index ${models[*]} --images $PHOTOS --detector $DETECTOR"
fi
