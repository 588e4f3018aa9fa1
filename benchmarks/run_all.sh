#!/usr/bin/env bash
# Run every head-to-head benchmark one after the other (nothing else should be running),
# printing each one's medians and ratios. Pass --quick for a short run.
#   bash benchmarks/run_all.sh [--quick] | tee bench.log
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ)"
"$PY" -c "import PIL, torch, numpy; print(f'PIL {PIL.__version__}, torch {torch.__version__}, numpy {numpy.__version__}')"
status=0
for b in gather loader tabular ingest vision text engine; do
  echo; echo "===== bench_$b ====="
  extra=()
  [ "$b" = vision ] && extra=(--stock-pillow)
  "$PY" "benchmarks/bench_$b.py" "$@" "${extra[@]}" || { echo "bench_$b failed"; status=1; }
done
exit $status
