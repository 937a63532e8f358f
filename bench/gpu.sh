#!/usr/bin/env bash
# Every GPU check of the project in one device call (under 10 minutes on one H200):
# the GPU tests, then the GPU benchmarks; figures and logs go to $OUT (bench/out/gpu here).
#
# On the lent GPU machine (its python3 has CUDA torch but not this project's other packages,
# so they travel as wheels; `make gpu-wheels` fetches them into .whl/ once, here):
#   run(command="bash bench/gpu.sh", carry=[".whl", ".gpudata"], timeout_s=590)
# .gpudata/real/ holds a copy of ../shared/data/real/{totalsegmentator-example,lits-117}
# (`make gpu-wheels` copies it; ../shared does not travel).
set -uo pipefail
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
if [ -d .gpudata/real ] && [ ! -e ../shared/data/real ]; then
  mkdir -p ../shared/data && ln -s "$PWD/.gpudata/real" ../shared/data/real
fi
{ nvidia-smi; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
  > "$OUT/device.txt" 2>&1
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"; then
  echo "no CUDA device: nothing to measure"; exit 3
fi
: > "$OUT/summary.txt"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$?" | tee -a "$OUT/summary.txt"
}
step pytest-gpu 120 $PY -m pytest -m gpu -q -p no:cacheprovider tests/model/test_gpu.py
step realct 120 $PY -m bench.bench_realct --device cuda --repeats 3 --out "$OUT/realct.md"
step sweep 180 $PY -m bench.bench_gpu --device cuda --repeats 3 --out "$OUT/sweep.md" \
  --json "$OUT/sweep.json"
step split 90 $PY -m bench.bench_split --device cuda --repeats 3 --threads 1 --out "$OUT/split.md" \
  --json "$OUT/split.json"
step monai 120 $PY -m bench.bench_monai --device cuda --scans 2 --rounds 1 --out "$OUT/monai.md"
cat "$OUT/summary.txt"
