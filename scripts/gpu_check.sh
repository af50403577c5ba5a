#!/usr/bin/env bash
# Every GPU check in one run, for a session lent a GPU machine: the CUDA tests, the paper preset
# timed end to end, and the quick benchmark. Needs torch with CUDA, pytest, and mosaicdiff
# importable (for example PYTHONPATH=$PWD/src:$PWD). Short logs and the report go to
# ${OUT:-gpu-check}/; the samples stay in ${WORK:-/tmp/gpu-check-work}, too big to copy back.
# Each stage stops at its own limit (T_TEST, T_REPRO, T_BENCH seconds), so one that hangs
# leaves the others their time; an interrupted reproduce resumes when run again.
#
#   bash scripts/gpu_check.sh            # DEVICE=cpu PRESET=quick to try the script on a CPU
set -uo pipefail
out=${OUT:-gpu-check}
work=${WORK:-/tmp/gpu-check-work}
device=${DEVICE:-cuda}
preset=${PRESET:-paper}
mkdir -p "$out" "$work"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

timeout "${T_TEST:-300}" python3 -m pytest tests/test_cuda.py > "$out/test_cuda.log" 2>&1
echo "tests/test_cuda.py (rc $?): $(tail -1 "$out/test_cuda.log")"

start=$(date +%s)
timeout "${T_REPRO:-600}" python3 -m mosaicdiff reproduce --preset "$preset" --device "$device" \
    --out "$work/$preset" --no-progress > "$out/reproduce.log" 2>&1
rc=$?
echo "reproduce --preset $preset --device $device (rc $rc): $(($(date +%s) - start)) s"
cp "$work/$preset/report/report.md" "$work/$preset/report/timings.json" "$out/" 2>/dev/null
grep -a -A8 "^| model |" "$out/reproduce.log" | tail -9
sed -n '/^## Time/,$p' "$out/report.md" 2>/dev/null | grep -a "^| "  # each phase's seconds

timeout "${T_BENCH:-300}" python3 -m benchmarks --quick --device "$device" \
    --json "$out/bench.json" > "$out/bench.log" 2>&1
echo "benchmarks --quick --device $device (rc $?):"
grep -av "done$" "$out/bench.log" | tail -18
