#!/usr/bin/env bash
# Build datafuel's C extensions with AddressSanitizer + UBSan into a scratch copy of the
# package, and run scripts/fuzz_native.py against them. Any out-of-bounds access, use
# after free or undefined behaviour aborts with a report and a non-zero exit status.
#   bash scripts/fuzz_asan.sh                  # 20,000 rounds
#   bash scripts/fuzz_asan.sh --seconds 50     # what .ci/run does
# Needs gcc with libasan/libubsan and the libjpeg headers (as the normal build does).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
CC="${CC:-gcc}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/datafuel-asan-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# the Python sources as they are, the extensions rebuilt with the sanitizers
cp -r datafuel "$WORK/datafuel"
find "$WORK/datafuel" -name '*.so' -delete
INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
SUFFIX="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
FLAGS=(-shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
  -fno-sanitize-recover=undefined -I"$INC")
build() { # source, module path, extra libraries...
  local src="$1" mod="$2"
  shift 2
  "$CC" "${FLAGS[@]}" "$src" -o "$WORK/${mod//.//}$SUFFIX" "$@"
}
build datafuel/vision/_jpegregion.c datafuel.vision._jpegregion -ljpeg -lm -lpthread
build datafuel/vision/_pack.c datafuel.vision._pack
build datafuel/clean/_knnselect.c datafuel.clean._knnselect -lm
build datafuel/loaders/_gather.c datafuel.loaders._gather
build datafuel/dedup/_hamming.c datafuel.dedup._hamming
build datafuel/loaders/_spanring.c datafuel.loaders._spanring

# Python itself is not built with ASan: preload the runtime, and do not report the
# interpreter's deliberate never-freed allocations as leaks
PRELOAD="$("$CC" -print-file-name=libasan.so):$("$CC" -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ROOT="$(pwd)"
cd "$WORK"
PYTHONPATH="$WORK" LD_PRELOAD="$PRELOAD" DATAFUEL_FUZZ_BUILD="$WORK" \
  "$PY" -W ignore "$ROOT/scripts/fuzz_native.py" "$@"
