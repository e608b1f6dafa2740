#!/usr/bin/env bash
# A cold `make book` of this repository's HEAD in a fresh clone (empty results cache, new .venv), timed.
#
#   benchmarks/cold_book.sh DEST              # the book as it is
#   benchmarks/cold_book.sh DEST float32      # every chapter with gram_dtype: float32 (not the book's setting;
#                                             # measures what relaxing float64 Grams would buy)
#
# DEST/clone is the clone; DEST/results its results JSON, DEST/log the build's output, DEST/time the wall time.
# Compare two builds' results leaf by leaf with benchmarks/compare_results.py.
set -euo pipefail
dest=$(realpath -m "$1"); mode=${2:-float64}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
rm -rf "$dest" && mkdir -p "$dest"
git clone -q "$repo" "$dest/clone"
cd "$dest/clone"
book_args=()
if [ "$mode" = float32 ]; then
  echo "gram_dtype: float32" > "$dest/float32.yaml"      # the chapters' parameter, in every measuring chapter
  book_args=(BOOK_ARGS="-f $dest/float32.yaml")
elif [ "$mode" != float64 ]; then
  echo "mode is float64 or float32, not $mode" >&2; exit 2
fi
{ lscpu | grep -E '^Model name'; grep -o 'avx2\|avx512f\|avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ';
  echo; git log -1 --format='%h %s' | cut -c1-100; } > "$dest/machine"
start=$(date +%s)
make book "${book_args[@]}" > "$dest/log" 2>&1
end=$(date +%s)
echo "$((end - start)) s wall, $(date -u -d @$((end - start)) +%M:%S)" > "$dest/time"
cp -r book/chapters "$dest/chapters"; cp -r book/chapters/results "$dest/results"
cat "$dest/time"
