#!/usr/bin/env bash
# The quickstart lifecycle in local mode: what `make demo` runs. Each command is one a user types.
#
# The demo keeps its state where the user's next commands look for it: $KUBEFORGE_STATE_DIR when
# set, else ./.kubeforge, both resolved from the directory the demo was started in (what
# `kubeforge get` resolves there afterwards). It prints those next commands at the end, runnable
# as printed from that directory (tests/test_demo_commands.py runs them against a stub).
set -euo pipefail
start_dir=$PWD
KF=${KUBEFORGE:-kubeforge}
# A relative KUBEFORGE path names a file from the start directory; run it from anywhere after the cd.
case "$KF" in */*) KF_RUN=$(realpath -m "$KF") ;; *) KF_RUN=$KF ;; esac
# Set for this command only (`KUBEFORGE_STATE_DIR=x make demo`), the user's shell will not have it:
# then the printed commands name it with --state-dir.
state_flag=""
[ -z "${KUBEFORGE_STATE_DIR:-}" ] || state_flag=$(printf ' --state-dir %q' "$(realpath -m "$KUBEFORGE_STATE_DIR")")
store_flag=""
if [ -n "${KUBEFORGE_STORE:-}" ]; then
  case "$KUBEFORGE_STORE" in *://*) ;; *) KUBEFORGE_STORE=$(realpath -m "$KUBEFORGE_STORE"); export KUBEFORGE_STORE ;; esac
  store_flag=$(printf ' --store %q' "$KUBEFORGE_STORE")
fi
KUBEFORGE_STATE_DIR=$(realpath -m "${KUBEFORGE_STATE_DIR:-.kubeforge}")
export KUBEFORGE_STATE_DIR
cd "$(dirname "$0")/../.."
# Scratch files of the demo itself (images held out for the prediction), relative to the repository.
DEMO_DIR=${DEMO_DIR:-.kubeforge/demo}
start=$(date +%s)
say() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

say "1. Generate a synthetic COCO dataset (circles, squares, triangles)"
"$KF_RUN" datasets synth shapes --out examples/quickstart/data/shapes --images 500 --size 160 --seed 7
# A few images the model never sees, for the prediction at the end.
"$KF_RUN" datasets synth shapes --out "$DEMO_DIR/holdout" --images 4 --size 160 --seed 2026

say "2. Run the lifecycle: DatasetVersion -> TrainingJob -> Benchmark -> InferenceService"
"$KF_RUN" run -f examples/quickstart/

say "3. What kubectl get would show"
"$KF_RUN" get kubeforge

say "4. A prediction from Triton on an image the model never saw"
"$KF_RUN" predict shapes "$DEMO_DIR"/holdout/images/000000.png
"$KF_RUN" datasets truth "$DEMO_DIR/holdout/annotations.json" 000000.png

say "5. The benchmark report and the experiment"
"$KF_RUN" describe benchmark shapes-detector-benchmark | grep -E "reportUri|metricsUri|AP50|headline"
"$KF_RUN" describe trainingjob shapes-detector | grep -E "experimentUri|onnxUri|onnxParityMaxAbsDiff"

say "6. Where every artifact went"
"$KF_RUN" store tree

# Printed with the KUBEFORGE the demo was given: copied into the start directory, they read the same
# state ($KUBEFORGE_STATE_DIR, or ./.kubeforge there) and the same store.
printf '\nDemo finished in %ss; its state is in %s. Next, from %s:\n' \
  "$(( $(date +%s) - start ))" "$KUBEFORGE_STATE_DIR" "$start_dir"
printf '  %s\n' \
  "$KF get trainingjobs$state_flag" \
  "$KF describe trainingjob shapes-detector$state_flag" \
  "$KF store tree$state_flag$store_flag" \
  "$KF stop inferenceservice shapes$state_flag    # Triton keeps serving until then"
