#!/usr/bin/env bash
# The GPU checks of docs/gpu.md in one go, on a bare machine with CUDA torch + transformers
# (this workplace's device image). Missing packages come as wheels in .whl/ (see docs/gpu.md):
# ray (trimmed of its Java jars), pydantic, jsonschema & co., hjson, and DeepSpeed's sdist.
# Each part runs ~1 min, except ray (~1 min per training run on the H100, ~100 s for the first).
# Writes <out>/{setup.log,strategy.*,ray.*,score.*,ckpts.tgz}; OUT defaults to /tmp/ilp-gpu-out.
set -u -o pipefail
OUT=${OUT:-/tmp/ilp-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled \
  RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
SITE=/tmp/ilp-site
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -V
  t0=$(date +%s)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE .whl/*.whl || exit 1
  echo "wheels installed in $(( $(date +%s) - t0 ))s"; t0=$(date +%s)
  DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target $SITE .whl/deepspeed-*.tar.gz || exit 1
  echo "deepspeed built from sdist in $(( $(date +%s) - t0 ))s"
} > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
export PYTHONPATH=$SITE:$PWD
{
  python3 -c "import torch, transformers, deepspeed, ray, pydantic; print('torch', torch.__version__, torch.version.cuda, \
'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__, 'ray', ray.__version__, 'pydantic', pydantic.__version__)"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/train/test_collectives.py 2>&1 | tail -3
} >> "$OUT/setup.log" 2>&1
cat "$OUT/setup.log"

part() {  # name, time limit, args...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python3 bench/gpu_check.py "$name" --out "$OUT" "$@" > "$OUT/$name.log" 2>&1
  echo "--- $name: rc=$? in $(( $(date +%s) - t0 ))s"
  grep -A60 "^== $name" "$OUT/$name.log" || tail -25 "$OUT/$name.log"
}
PARTS=${PARTS:-strategy ray score}  # e.g. PARTS="ray score" RAY_ARGS="--only zero2-bf16 ddp-fp32"
[[ " $PARTS " == *" strategy "* ]] && part strategy "${T_STRATEGY:-120}" --steps 120 --extra 10
rm -rf /tmp/ilp-keep
# shellcheck disable=SC2086
[[ " $PARTS " == *" ray "* ]] && part ray "${T_RAY:-360}" --keep /tmp/ilp-keep --epochs 20 ${RAY_ARGS:-}
"$SITE/bin/ray" stop --force > /dev/null 2>&1
CK=()
for n in zero2-bf16 ddp-fp32; do [ -d /tmp/ilp-keep/$n ] && CK+=("$n=/tmp/ilp-keep/$n"); done
[ -d /tmp/ilp-keep ] && tar czf "$OUT/ckpts.tgz" -C /tmp/ilp-keep .
# shellcheck disable=SC2086
[[ " $PARTS " == *" score "* ]] && part score "${T_SCORE:-120}" ${SCORE_ARGS:-} --ckpt "${CK[@]}"
for f in "$OUT"/*.log; do  # keep each returned file small
  [ "$(stat -c %s "$f")" -gt 4000000 ] && tail -c 4000000 "$f" > "$f.t" && mv "$f.t" "$f"
done
ls -la "$OUT"
