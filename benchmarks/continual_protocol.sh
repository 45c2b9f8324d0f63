#!/usr/bin/env bash
# The continual-learning protocol of BENCHMARKS.md ("Continual learning, the 50-task protocol"):
# both 50-task sequences, every method, three seeds for the core rows, in two lanes that run side
# by side (one thread each, as on a 2-core machine). Every run is written when it finishes and
# `--resume` skips the finished ones, so the script can be stopped and started again; it ends by
# merging each sequence's lanes into one table.
#
#   bash benchmarks/continual_protocol.sh             # both sequences (measured: about 45-55 min a
#                                                     # retrieval row, 25 frozen, 45 scratch)
#   bash benchmarks/continual_protocol.sh synthetic   # or one of them
#   bash benchmarks/continual_protocol.sh pubmedqa
#
# Sizing: 4 steps a task after 24 on task 1 (batch 4, half of it replay where a method replays),
# one retrieved passage, full accuracy-matrix rows every 10 tasks (the diagonal every task),
# scratch retrained once, at task 50, with the total steps a sequential learner spent. The
# closed-book rows get 24 steps a task, their own budget: they must memorise every fact.
# Ours runs continual-update's defaults (replay, no EWC, distillation or anchors), so the replay-only
# row repeats it run for run and comes last; ours_anchors is ours with 16 general anchors.
# PubMedQA indexes the chunk stage's 128-token windows (its default), not whole abstracts: an
# abstract is ~350 tokens, and whole-abstract prompts made a step 25 s and an answer 2 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-benchmarks/results}
export OMP_NUM_THREADS=1 TQDM_DISABLE=1

common() {  # the settings every run of a sequence shares
    local sequence=$1
    if [ "$sequence" = pubmedqa ]; then  # abstracts cut as the chunk stage cuts them; rows at 25 and 50
        echo "--mode full --sequence pubmedqa --tasks 50 --steps 4 --first-steps 24 --k 1 --chunk-tokens 128" \
            "--max-new-tokens 4 --eval-every 25 --scratch-every 50 --resume"
    else
        echo "--mode full --sequence synthetic --tasks 50 --steps 4 --first-steps 24 --k 1" \
            "--max-new-tokens 8 --eval-every 10 --scratch-every 50 --resume"
    fi
}

folder() {  # the results folder of a sequence
    [ "$1" = synthetic ] && echo "$RESULTS/continual-syn50" || echo "$RESULTS/continual-$150"
}

lane() {  # lane SEQUENCE NAME "METHOD SEED" ...: one run after another, each into its lane's folder
    local sequence=$1 name=$2
    shift 2
    for run in "$@"; do
        set -- $run
        local out=$name extra=""
        case $1 in naive | replay | osf) out=$name-closed extra="--closed-book-steps 24" ;; esac
        # shellcheck disable=SC2046
        "$PYTHON" benchmarks/continual.py $(common "$sequence") $extra --methods "$1" --seeds "$2" \
            --out "$(folder "$sequence")/$out" --work "benchmarks/.cache/$(basename "$(folder "$sequence")")-$out"
    done
}

merge() {  # one table and plots per sequence from every lane that finished something
    local files=("$(folder "$1")"/*/results.json)
    "$PYTHON" benchmarks/continual.py --from-results "${files[@]}" --out "$(folder "$1")"
}

synthetic() {
    lane synthetic p1 "ours 1" "frozen 1" "ours 2" "frozen 2" "ours 3" "frozen 3" "ours_anchors 1" \
        "naive 1" "osf 1" "lora_rag_replay 1" &
    lane synthetic p2 "lora_rag 1" "scratch 1" "lora_rag 2" "scratch 2" "rag 1" "lora_rag 3" "scratch 3" \
        "osf_rag 1" "replay 1" &
    wait
    merge synthetic
}

pubmedqa() {
    lane pubmedqa p1 "ours 1" "frozen 1" "lora_rag_replay 1" "rag 1" "naive 1" "osf 1" &
    lane pubmedqa p2 "lora_rag 1" "scratch 1" "osf_rag 1" "replay 1" "ours_anchors 1" &
    wait
    merge pubmedqa
}

case "${1:-all}" in
    synthetic) synthetic ;;
    pubmedqa) pubmedqa ;;
    all) synthetic && pubmedqa ;;
    *) echo "usage: $0 [synthetic|pubmedqa|all]" >&2 && exit 2 ;;
esac
