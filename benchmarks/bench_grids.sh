#!/usr/bin/env bash
# Benchmark grids of exact memory on the embedded model (PhoneBook, stress test, linear rule).
# Run from the repository root after `python3 tasks.py setup`:  bash benchmarks/bench_grids.sh
# Writes benchmarks/results/grids/{phonebook,stress,rule}.{json,csv,txt}; the .txt files hold the printed tables.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/grids
mkdir -p "$out"
memft=.venv/bin/memft
export COLUMNS=140  # wide enough for the tables when stderr is a file
common=(--ranks 1,2,4,8 --max-steps 150 --seed 0)
$memft bench phonebook "${common[@]}" --lengths 100,200 --json "$out/phonebook.json" --csv "$out/phonebook.csv" 2> "$out/phonebook.txt"
$memft bench stress "${common[@]}" --lengths 64,128 --ratios 0,100 --json "$out/stress.json" --csv "$out/stress.csv" 2> "$out/stress.txt"
$memft bench rule "${common[@]}" --lengths 50,100 --heldout 100 --json "$out/rule.json" --csv "$out/rule.csv" 2> "$out/rule.txt"
