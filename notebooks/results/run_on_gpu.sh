#!/usr/bin/env bash
# How the committed GPU results were made (each call of the lent machine runs at most 10 minutes).
#
#   bash notebooks/results/run_on_gpu.sh PART [PART ...]
#
# PART: env | evaluator | bench | bench-h200 | bench-small | bench-profile | bench-autotune | train-auto | sample-ladder
#       | sample-triton | sample-cli | 08A | 08B | 08C | 08-parallel | 08-sitting | 08-wait | 09 | 10 | scaling
#
# First session, one H100: env evaluator bench(-ladder) 08A 08B 08C 09, one or two parts a call.
# Second session, a 2-GPU H100 host (the same `export NCCL_NVLS_ENABLE=0 ...` in every call):
#   1. CUDA_VISIBLE_DEVICES=0 ... env bench-profile bench-autotune  &  CUDA_VISIBLE_DEVICES=1 SR_MINUTES=5.5 ... 09
#   2. 08-parallel scaling   (SCALING_ARGS="--speed-steps 200 --curve-steps 400 --log-every 50"; GPU_DEADLINE cut
#      2xDiT-B/2 short)   3. scaling with "--only 2xDiT-B/2" added   4. CUDA_VISIBLE_DEVICES=0 ... bench (other GPU idle)
#   5. the two compile-scope control runs by hand (their commands are in multi_gpu/scaling.json)
#
# 08-parallel: every unfinished run of parts B and C as its own process, spread over the visible GPUs
# (the eager DiT-S/4 runs are bound by kernel launches, so three share a GPU well); then the figures.
# scaling: minidit.tools.scaling on all visible GPUs (issue [9]); needs 2 or more.
# GPU_DEADLINE (epoch seconds), when set, stops every step of a part there (timeout), so a lane of a
# call with a time limit ends before it and still copies what it has to $OUT.
# Fashion-MNIST is read from $MINIDIT_DATA_DIR (default: .device_data/ beside this checkout, where the
# .gz files were copied because the GPU machine has no network). Missing pure-Python packages are
# installed from wheels in .whl/ when present. Results land in notebooks/results/<experiment>/ and,
# when $OUT is set (the lent GPU machine), a copy of the small files goes to $OUT.
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
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
  $PY -m pip install -q --no-index --no-deps --no-compile --target "/tmp/site.$$" "${missing[@]}" && export PYTHONPATH="$PYTHONPATH:/tmp/site.$$"
fi

run_py() {  # run_py ARGS...: $PY ARGS, stopped at GPU_DEADLINE when that is set
  if [ -n "${GPU_DEADLINE:-}" ]; then
    left=$(( GPU_DEADLINE - $(date +%s) ))
    [ "$left" -gt 5 ] || { echo "no time left before GPU_DEADLINE for: $*"; return 124; }
    timeout "$left" "$PY" "$@"
  else
    "$PY" "$@"
  fi
}

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
      $PY -m minidit.evaluation.evaluator train --out minidit/assets/evaluator.safetensors
      copy_out minidit/assets/evaluator.safetensors minidit/assets/evaluator.json ;;
    bench)  # the file the README's speed table quotes
      run_py -m minidit.tools.bench --variants baseline,baseline-bf16-compile,fast,fast-recompute \
        --out notebooks/results/bench/bench_h100.json
      copy_out notebooks/results/bench/bench_h100.json ;;
    bench-h200)  # issue [11]: the file the README's speed table quotes -- the faithful baselines and the default step of
      # DiT-S/2 (each profiled), and sampling through minidit.sample.sample at the CLI's settings (bf16 copy of the
      # model) and, DDPM only, with the fp32 weights under autocast that sampling used before
      run_py -m minidit.tools.bench --variants baseline,baseline-bf16-compile,default --profile \
        --sample-batch 500 --sample-weights default,fp32 --out notebooks/results/bench/bench_h200.json
      copy_out notebooks/results/bench/bench_h200.json ;;
    sample-triton)  # issue [11]: the sampler with Triton matmuls only, every GELU / bias / gate / residual fused into its
      # matmul (minutes of autotuning), then the default in the same process; DDPM-250 only
      run_py -m minidit.tools.bench --variants "" --profile --sample-batch 500 --sample-modes max-autotune-triton,default \
        --no-sample-first-all \
        --out notebooks/results/bench/bench_h200_sample_triton.json
      copy_out notebooks/results/bench/bench_h200_sample_triton.json ;;
    bench-small)  # issues [10] and [11]: the ablation's small models -- compiled alone, with CUDA graphs, and as
      # SMALL_PROCS concurrent processes on the one GPU (their timed windows are in the JSON, to check they overlap)
      run_py -m minidit.tools.bench --model DiT-S/4 DiT-S/8 --variants fast-recompute,fast-recompute-cudagraphs --no-sample \
        --out notebooks/results/bench/bench_h200_small.json
      mkdir -p runs/concurrent; rm -f runs/concurrent/*.json; n=${SMALL_PROCS:-4}
      for i in $(seq 1 "$n"); do
        run_py -m minidit.tools.bench --model DiT-S/4 --variants fast-recompute --no-sample --warmup 20 --steps 200 \
          --out "runs/concurrent/p$i.json" > "runs/concurrent/p$i.log" 2>&1 &
      done
      wait
      $PY -m minidit.tools.bench --combine runs/concurrent/p*.json --out notebooks/results/bench/bench_h200_small.json
      copy_out notebooks/results/bench/bench_h200_small.json ;;
    bench-profile)  # the whole ladder, and where each variant's time goes
      run_py -m minidit.tools.bench --variants baseline,baseline-bf16,baseline-bf16-compile,fast-eager,fast,fast-recompute \
        --profile --out notebooks/results/bench/bench_h100_profile.json
      copy_out notebooks/results/bench/bench_h100_profile.json ;;
    bench-autotune)  # max-autotune tries Triton matmul templates: minutes of compiling, so its own JSON
      run_py -m minidit.tools.bench --variants baseline,fast-autotune-recompute,fast-autotune --no-sample \
        --out notebooks/results/bench/bench_h100_autotune.json
      copy_out notebooks/results/bench/bench_h100_autotune.json ;;
    08A|08B|08C)
      MINIDIT_QUICK=0 MINIDIT_PART="${part#08}" run_py notebooks/08_train_dit_and_ablation.py
      pack_out notebooks/results/08_train_dit_and_ablation "results_$part" ;;
    08-parallel)
      gpus=$(nvidia-smi -L | wc -l); i=0; mkdir -p runs/logs
      export MINIDIT_NOTE="08-parallel: the unfinished runs of parts B and C ran as concurrent processes, $gpus GPU(s) shared; img/s of a run is lower than alone"
      for p in B C; do
        for name in $($PY -m minidit.tools.experiments $p --pending); do
          CUDA_VISIBLE_DEVICES=$(( i % gpus )) run_py -m minidit.tools.experiments $p --only "$name" --budget 9 \
            > "runs/logs/08${p}_$name.log" 2>&1 &
          echo "part $p run $name on GPU $(( i % gpus ))"; i=$(( i + 1 ))
        done
      done
      wait
      tail -n 3 runs/logs/08*.log
      MINIDIT_SAVE_FIGURES=1 run_py notebooks/08_train_dit_and_ablation.py > runs/logs/08_figures.log 2>&1 || tail -20 runs/logs/08_figures.log
      cp runs/logs/08*.log notebooks/results/08_train_dit_and_ablation/ 2>/dev/null
      pack_out notebooks/results/08_train_dit_and_ablation results_08 ;;
    08-sitting)  # issue [10]: A and every pending B run as concurrent processes, in a new session (setsid) so the
      # work goes on between calls; later calls run 08-wait while the machine stays held (runs/ survives only then).
      # The records go to the git-ignored runs/results_08 (seeded with the committed ones): each call re-syncs the
      # working tree, which removes untracked files from notebooks/results/ (the first sitting lost records so).
      mkdir -p runs/logs runs/results_08; rm -f runs/sitting.done
      cp -n notebooks/results/08_train_dit_and_ablation/*.json runs/results_08/ 2>/dev/null
      # The data too: a later call replaces the carried .device_data, and a run that starts reading it
      # then fails (part C's S/8 run did, in the second sitting).
      mkdir -p runs/data && cp -n "$MINIDIT_DATA_DIR"/*.gz runs/data/ && export MINIDIT_DATA_DIR="$PWD/runs/data"
      setsid nohup bash "$SELF" 08-sitting-body > runs/logs/08_sitting.log 2>&1 < /dev/null &
      sleep 20; echo "08-sitting: started (budget ${SITTING_BUDGET:-23} min)"; cat runs/logs/08_sitting.log
      nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv ;;
    08-sitting-body)  # A, B (one lane per block, its seeds in turn, so a short sitting still finishes whole runs), C
      mkdir -p runs/logs
      budget=${SITTING_BUDGET:-23}
      export MINIDIT_NOTE="08-sitting: part A and the pending part B runs as concurrent processes on one GPU"
      # EXP_ARGS: extra flags for minidit.tools.experiments (a CPU rehearsal: "--quick --results-dir D --runs-dir R")
      EXP_ARGS=${EXP_ARGS:---results-dir runs/results_08}
      run_py -m minidit.tools.experiments A --budget "$budget" ${EXP_ARGS:-} > runs/logs/08A.log 2>&1 &
      for block in adaLN-Zero adaLN cross-attention in-context; do
        names=$($PY -m minidit.tools.experiments B --pending ${EXP_ARGS:-} | grep "_${block}_seed")
        if [ -n "$names" ]; then
          run_py -m minidit.tools.experiments B --only $names --budget "$budget" ${EXP_ARGS:-} \
            > "runs/logs/08B_${block}.log" 2>&1 &
        fi
      done
      # part C's own runs (its S/4 point is B's adaLN-Zero seed 0), one process each
      for name in $($PY -m minidit.tools.experiments C --pending ${EXP_ARGS:-} | grep -v "^S4_"); do
        run_py -m minidit.tools.experiments C --only "$name" --budget "$budget" ${EXP_ARGS:-} > "runs/logs/08C_${name}.log" 2>&1 &
      done
      wait
      [ "$EXP_ARGS" != "--results-dir runs/results_08" ] || MINIDIT_RESULTS_DIR=runs/results_08 MINIDIT_SAVE_FIGURES=1 \
        run_py notebooks/08_train_dit_and_ablation.py > runs/logs/08_figures.log 2>&1
      touch runs/sitting.done ;;
    08-wait)  # wait for 08-sitting (at most WAIT_S seconds), then send back what it has
      end=$(( $(date +%s) + ${WAIT_S:-500} ))
      while [ ! -f runs/sitting.done ] && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
      [ -f runs/sitting.done ] && echo "08-sitting: finished" || echo "08-sitting: still running"
      nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
      for f in runs/logs/08*.log; do echo "--- $f"; tr '\r' '\n' < "$f" | grep -v "^\s*$" | tail -n 4; done
      for f in runs/logs/08*.log; do cp "$f" "runs/results_08/log_$(basename "$f" .log).txt"; done
      pack_out runs/results_08 results_08 ;;  # unpack here into notebooks/results/08_train_dit_and_ablation/
    train-auto)  # issue [11]: the default compile mode "auto" on a small model (CUDA graphs) through the whole loop:
      # checkpoints, sample grids, a stop at --steps, then --resume to more steps; the history says what ran
      rm -rf runs/train_auto; mkdir -p notebooks/results/bench
      run_py -m minidit.train --model DiT-S/8 --steps 300 --ckpt-every 150 --sample-every 150 --log-every 50 \
        --out-dir runs/train_auto --no-progress && \
      run_py -m minidit.train --model DiT-S/8 --steps 600 --ckpt-every 150 --sample-every 300 --log-every 50 \
        --out-dir runs/train_auto --resume --no-progress
      echo "train-auto rc $?"
      $PY -c "import json; h = json.load(open('runs/train_auto/history.json')); \
print({k: h.get(k) for k in ('compiled', 'compile_mode', 'compile_scope', 'final_step')}); print('loss', h['loss'][-3:], 'img/s', h['img_per_s'][-3:])"
      cp runs/train_auto/history.json notebooks/results/bench/train_auto_s8_history.json
      cp runs/train_auto/samples/0000600.png notebooks/results/bench/train_auto_s8_samples.png 2>/dev/null
      copy_out notebooks/results/bench/train_auto_s8_history.json notebooks/results/bench/train_auto_s8_samples.png ;;
    sample-ladder)  # issue [11]: where the sampler's time goes (profile) and what each lever is worth, DDPM-250 at the
      # CLI's batch: compile mode default vs max-autotune (Triton matmuls, epilogues fused), fp32 weights under
      # autocast vs a bf16 copy; and the training step's profile
      run_py -m minidit.tools.bench --variants default --profile --sample-batch 500 \
        --sample-modes default,max-autotune-no-cudagraphs --sample-weights fp32,bf16 \
        --out notebooks/results/bench/bench_h200_sample_ladder.json
      copy_out notebooks/results/bench/bench_h200_sample_ladder.json ;;
    sample-cli)  # issue [11]: the time a user waits for `python -m minidit.sample --num 10000` (fresh process, compile
      # included), on a DiT-S/2 with freshly initialised weights (the arithmetic does not depend on the weights)
      mkdir -p runs/sample_cli
      $PY -c "from minidit.model import create_model; from minidit.checkpoint import save_weights; \
m = create_model('${SAMPLE_MODEL:-DiT-S/2}', input_size=32, in_channels=1, num_classes=10); \
save_weights('runs/sample_cli/s2.safetensors', m, m, {'train': {'noise_schedule': 'linear', 'diffusion_steps': 1000}})"
      rows=""
      n=${SAMPLE_NUM:-10000}  # SAMPLE_MODEL / SAMPLE_NUM: a CPU rehearsal with a tiny model
      for args in "--num $n" "--num $n --sampler ddim --steps 50" "--num $n --cfg-scale 1.5"; do
        s0=$(date +%s.%N)
        run_py -m minidit.sample --ckpt runs/sample_cli/s2.safetensors --out runs/sample_cli/g.png $args \
          > runs/sample_cli/log.txt 2>&1; rc=$?
        s1=$(date +%s.%N)
        secs=$($PY -c "print(round($s1 - $s0, 2))")
        rows="$rows{\"command\": \"python -m minidit.sample $args\", \"seconds\": $secs, \"rc\": $rc},"
        echo "python -m minidit.sample $args: $secs s (rc $rc)"; tr "\r" "\n" < runs/sample_cli/log.txt | tail -n 3
      done
      $PY -c "import json, sys, torch; print(json.dumps({'device_name': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', \
'torch_version': torch.__version__, 'model': '${SAMPLE_MODEL:-DiT-S/2}', 'what': 'wall time of a fresh process, compile included', \
'runs': json.loads(sys.argv[1])}, indent=1))" "[${rows%,}]" > notebooks/results/bench/sample_cli_h200.json
      copy_out notebooks/results/bench/sample_cli_h200.json ;;
    09)
      run_py -m minidit.superres --out notebooks/results/09_super_resolution --minutes "${SR_MINUTES:-6}"  # + about 2.3 min of compiling, outside the budget
      pack_out notebooks/results/09_super_resolution results_09 ;;
    10)  # the budget covers the whole run, torch.compile included; Python start-up comes on top
      mkdir -p notebooks/results/10_latent_diffusion
      run_py -m minidit.tools.latent_experiment --out notebooks/results/10_latent_diffusion --minutes "${LATENT_MINUTES:-8}" \
        2>&1 | tee notebooks/results/10_latent_diffusion/log_10.txt
      pack_out notebooks/results/10_latent_diffusion results_10 ;;
    scaling)  # NVLink multicast stays off on shared hosts
      export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
      run_py -m minidit.tools.scaling --gpus "$(nvidia-smi -L | wc -l)" --parallel-single ${SCALING_ARGS:-} \
        --out notebooks/results/multi_gpu/scaling.json
      for f in runs/scaling/*.log; do [ -f "$f" ] && cp "$f" "notebooks/results/multi_gpu/log_$(basename "$f" .log).txt"; done
      pack_out notebooks/results/multi_gpu results_scaling ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
  echo "=== part $part took $(( $(date +%s) - t0 )) s"
done
