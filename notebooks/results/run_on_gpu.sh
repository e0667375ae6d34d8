#!/usr/bin/env bash
# How the committed GPU results were made: one part per call of at most 10 minutes on one GPU.
#
#   bash notebooks/results/run_on_gpu.sh PART [PART ...]
#
# PART: env | evaluator | bench | 08A | 08B | 08C | 09
# Fashion-MNIST is read from $MINIDIT_DATA_DIR (default: .device_data/ beside this checkout, where the
# .gz files were copied because the GPU machine has no network). Missing pure-Python packages are
# installed from wheels in .whl/ when present. Results land in notebooks/results/<experiment>/ and,
# when $OUT is set (the lent GPU machine), a copy of the small files goes to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export MINIDIT_DATA_DIR="${MINIDIT_DATA_DIR:-$PWD/.device_data}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # notebooks run as scripts import minidit from here
PY=${PY:-python3}

# Wheels for packages the GPU image may lack (einops, tqdm, matplotlib and its dependencies).
missing=()
$PY -c "import einops" 2>/dev/null || missing+=(.whl/einops-*.whl)
$PY -c "import tqdm" 2>/dev/null || missing+=(.whl/tqdm-*.whl)
$PY -c "import matplotlib" 2>/dev/null || missing+=(.whl/mpl/*.whl)
if [ ${#missing[@]} -gt 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${missing[@]}" && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

pack_out() {  # pack_out DIR NAME -> $OUT/NAME.tar.gz (the GPU machine returns at most 8 files a call)
  [ -n "${OUT:-}" ] && [ -d "$1" ] && tar -czf "$OUT/$2.tar.gz" -C "$(dirname "$1")" "$(basename "$1")"
}

copy_out() {  # copy_out FILE... -> $OUT/<experiment>/FILE (at most 2 folders deep)
  [ -n "${OUT:-}" ] || return 0
  for f in "$@"; do
    [ -f "$f" ] || continue
    d="$OUT/$(basename "$(dirname "$f")")"; mkdir -p "$d"; cp "$f" "$d/"
  done
}

for part in "$@"; do
  echo "=== part $part  $(date -u +%H:%M:%S)"
  t0=$(date +%s)
  case "$part" in
    env)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())" ;;
    evaluator)
      $PY -m minidit.evaluator train --out minidit/assets/evaluator.safetensors
      copy_out minidit/assets/evaluator.safetensors minidit/assets/evaluator.json ;;
    bench)
      $PY -m minidit.bench --variants baseline,baseline-bf16,baseline-bf16-compile,fast-eager,fast \
        --out notebooks/results/bench/bench_h100.json
      copy_out notebooks/results/bench/bench_h100.json ;;
    08A|08B|08C)
      MINIDIT_QUICK=0 MINIDIT_PART="${part#08}" $PY notebooks/08_train_dit_and_ablation.py
      pack_out notebooks/results/08_train_dit_and_ablation "results_$part" ;;
    09)
      $PY -m minidit.superres --out notebooks/results/09_super_resolution --minutes "${SR_MINUTES:-6}"  # + about 2.3 min of compiling, outside the budget
      pack_out notebooks/results/09_super_resolution results_09 ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
  echo "=== part $part took $(( $(date +%s) - t0 )) s"
done
