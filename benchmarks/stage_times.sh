#!/usr/bin/env bash
# Run the pipeline's stages in order on a params file, without DVC, and print each stage's wall time.
#
#     benchmarks/stage_times.sh params-medium.yaml            # python from PATH
#     PYTHON=.venv/bin/python benchmarks/stage_times.sh params.yaml
#
# For measuring a machine (a GPU box, a cluster node) where DVC is not installed: the stages write the
# same outputs `dvc repro` would (data/, models/, metrics/, plots/); nothing is cached or skipped.
# Runtime settings (WM_WORKERS, WM_LOAD_LIMIT_GB, ...) come from the environment as usual.
set -euo pipefail
params=${1:?usage: stage_times.sh PARAMS_FILE}
python=${PYTHON:-python}
declare -a rows
for stage in collect train_vae encode train_wm train_ctrl evaluate; do
    t0=$EPOCHREALTIME
    "$python" -m "stages.$stage" --params "$params"
    rows+=("$(awk -v s="$stage" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%-12s %8.1f s", s, b - a }')")
    echo "== ${rows[-1]}"
done
echo "== stage wall times ($params, WM_WORKERS=${WM_WORKERS:-auto})"
printf '%s\n' "${rows[@]}"
