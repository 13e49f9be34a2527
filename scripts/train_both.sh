#!/usr/bin/env bash
# Train bond_vae and pairwise_vae at the same time, each pinned to its own GPU.
#
#   scripts/train_both.sh            (normally through `make train-both`)
#
# Environment: BOND_GPU (default 0), PAIRWISE_GPU (default 1), RUNS_DIR (default runs),
# ARGS (flags for both), BOND_ARGS and PAIRWISE_ARGS (flags for one), VENV (default .venv),
# PYTHON (default $VENV/bin/python: any Python that imports both packages).
# Each training logs to its own file and writes its own run folder. Ctrl-C (or SIGTERM)
# asks both to save a checkpoint and stop. Exits non-zero if either training failed.
set -uo pipefail

BOND_GPU=${BOND_GPU:-0}
PAIRWISE_GPU=${PAIRWISE_GPU:-1}
RUNS_DIR=${RUNS_DIR:-runs}
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$VENV/bin/python}
read -r -a common_args <<< "${ARGS:-}"
read -r -a bond_args <<< "${BOND_ARGS:-}"
read -r -a pairwise_args <<< "${PAIRWISE_ARGS:-}"

gpu_count=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$gpu_count" -ge 2 ]; then
    echo "train-both: bond_vae on GPU $BOND_GPU, pairwise_vae on GPU $PAIRWISE_GPU"
elif [ "$gpu_count" -eq 1 ]; then
    echo "train-both: only 1 GPU visible; both trainings share it" >&2
    BOND_GPU=0
    PAIRWISE_GPU=0
else
    echo "train-both: no GPU visible; both trainings run on the CPU" >&2
    BOND_GPU=""
    PAIRWISE_GPU=""
fi

log_dir="$RUNS_DIR/train-both-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$log_dir"
set -m  # each training in its own process group: a terminal Ctrl-C reaches only this script
CUDA_VISIBLE_DEVICES=$BOND_GPU "$PYTHON" -m bond_vae --output-dir "$RUNS_DIR/bond_vae" \
    "${common_args[@]}" "${bond_args[@]}" >"$log_dir/bond_vae.log" 2>&1 &
bond_pid=$!
CUDA_VISIBLE_DEVICES=$PAIRWISE_GPU "$PYTHON" -m pairwise_vae --output-dir "$RUNS_DIR/pairwise_vae" \
    "${common_args[@]}" "${pairwise_args[@]}" >"$log_dir/pairwise_vae.log" 2>&1 &
pairwise_pid=$!
echo "train-both: logs in $log_dir (bond_vae.log, pairwise_vae.log); Ctrl-C stops both after a checkpoint"

stopping=0
stop_both() {
    [ "$stopping" -eq 1 ] && return
    stopping=1
    echo "train-both: stopping both trainings (each saves a checkpoint)..." >&2
    kill -INT "$bond_pid" "$pairwise_pid" 2>/dev/null
}
trap stop_both INT TERM

wait_for() {  # wait for a pid even when a trap interrupts `wait`
    local pid=$1 status
    while true; do
        wait "$pid"
        status=$?
        kill -0 "$pid" 2>/dev/null || return "$status"
    done
}
wait_for "$bond_pid"; bond_status=$?
wait_for "$pairwise_pid"; pairwise_status=$?

report() {
    local name=$1 status=$2 log="$log_dir/$1.log"
    if [ "$status" -eq 0 ]; then
        echo "train-both: $name finished ($(grep -m1 -o 'run folder [^ ]*' "$log" | cut -d' ' -f3))"
    elif [ "$stopping" -eq 1 ] && { [ "$status" -eq 130 ] || [ "$status" -eq 143 ]; }; then
        echo "train-both: $name stopped: $(tr '\r' '\n' < "$log" | grep -a -m1 '^stopped by')" >&2
    else
        echo "train-both: $name FAILED with exit code $status; last lines of $log:" >&2
        tr '\r' '\n' < "$log" | grep -av '^training:' | tail -n 3 | sed 's/^/    /' >&2
    fi
}
report bond_vae "$bond_status"
report pairwise_vae "$pairwise_status"
if [ "$bond_status" -eq 0 ] && [ "$pairwise_status" -eq 0 ]; then
    exit 0
fi
[ "$stopping" -eq 1 ] && exit 130
exit 1
