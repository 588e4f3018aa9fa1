#!/usr/bin/env bash
# Install datafuel and everything it needs on a fresh machine of this kind.
#   bash scripts/setup.sh        # runtime: datafuel + CPU torch + pillow-simd (+ matplotlib for --plot)
#   bash scripts/setup.sh dev    # also the test/lint tools and the DALI backend
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. torch first, pinned to the CPU build on this machine's disk: the project's own
#    requirement (torch>=2.2) is then satisfied; an unpinned torch resolves to a multi-GB CUDA build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  pip_install "torch==2.13.0"
fi

# 2. pillow-simd replaces Pillow (same PIL package). Built from source, with AVX2 where the
#    CPU has it (without -mavx2 it is SSE4 only). It goes in before datafuel so that pip
#    sees the PIL requirement met and never pulls stock Pillow over it.
#    The libjpeg-turbo headers are also what datafuel's region decoder (a C extension) builds on.
if command -v dpkg >/dev/null && { ! dpkg -s libjpeg62-turbo-dev >/dev/null 2>&1 || ! dpkg -s zlib1g-dev >/dev/null 2>&1; }; then
  (apt-get update -qq && apt-get install -y -qq libjpeg62-turbo-dev zlib1g-dev) >/dev/null
fi
# The wheel is built once into a cache directory and installed from there, so that putting it back
# after an extra that drags in stock Pillow (step 4) costs an install, not a second build.
WHEELS="${DATAFUEL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datafuel/wheels}"
PYTAG="$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"
ensure_pillow_simd() {
  if "$PY" -c "import PIL, sys; sys.exit(0 if '.post' in PIL.__version__ else 1)" 2>/dev/null; then
    return
  fi
  if ! ls "$WHEELS"/[Pp]illow_[Ss][Ii][Mm][Dd]-*-"$PYTAG"-*.whl >/dev/null 2>&1; then
    cc_flags="cc"
    grep -qw avx2 /proc/cpuinfo && cc_flags="cc -mavx2"
    mkdir -p "$WHEELS"
    CC="$cc_flags" "$PY" -m pip wheel --disable-pip-version-check -q --no-cache-dir --no-deps \
      -w "$WHEELS" "pillow-simd>=9"
  fi
  "$PY" -m pip uninstall -y -q pillow 2>/dev/null || true
  pip_install --force-reinstall --no-deps "$(ls -t "$WHEELS"/[Pp]illow_[Ss][Ii][Mm][Dd]-*-"$PYTAG"-*.whl | head -n 1)"
}
ensure_pillow_simd

# 3. datafuel itself (editable), with the dev + DALI + Ray + plot + TensorBoard extras for the
#    test suite (ray[data] pulls numpy, pandas, pyarrow and fsspec, never Pillow; matplotlib and
#    tensorboard depend on 'pillow' by name, so pip puts stock Pillow over pillow-simd here).
if [ "${1:-}" = "dev" ]; then
  pip_install -e ".[dev,dali,ray,plot,tensorboard]"
else
  pip_install -e ".[plot]"  # the demo's profile.png
fi

# 4. pillow-simd last: whatever step 3 pulled in ('pillow' for matplotlib and tensorboard), the
#    active PIL is the SIMD build again. A later 'pip install matplotlib' elsewhere does the same
#    replacement; rerun this script (or step 2's recipe) to undo it.
ensure_pillow_simd
"$PY" -c "import PIL, torch; from datafuel.vision import region_decode_available as r; print(f'datafuel installed: torch {torch.__version__}, PIL {PIL.__version__}, JPEG region decoder {\"built\" if r() else \"NOT built (whole-image decode)\"}')"
