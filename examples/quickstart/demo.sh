#!/usr/bin/env bash
# The quickstart lifecycle in local mode: what `make demo` runs. Each command is one a user types.
set -euo pipefail
cd "$(dirname "$0")/../.."
KF=${KUBEFORGE:-kubeforge}
DEMO_DIR=${DEMO_DIR:-.kubeforge/demo}
export KUBEFORGE_STATE_DIR="$DEMO_DIR/state"
start=$(date +%s)
say() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

say "1. Generate a synthetic COCO dataset (circles, squares, triangles)"
"$KF" datasets synth shapes --out examples/quickstart/data/shapes --images 500 --size 160 --seed 7
# A few images the model never sees, for the prediction at the end.
"$KF" datasets synth shapes --out "$DEMO_DIR/holdout" --images 4 --size 160 --seed 2026

say "2. Run the lifecycle: DatasetVersion -> TrainingJob -> Benchmark -> InferenceService"
"$KF" run -f examples/quickstart/

say "3. What kubectl get would show"
for kind in datasetversions trainingjobs benchmarks inferenceservices; do "$KF" get "$kind"; done

say "4. A prediction from Triton on an image the model never saw"
"$KF" predict shapes "$DEMO_DIR"/holdout/images/000000.png
"$KF" datasets truth "$DEMO_DIR/holdout/annotations.json" 000000.png

say "5. The benchmark report and the experiment"
"$KF" describe benchmark shapes-detector-benchmark | grep -E "reportUri|metricsUri|AP50|headline"
"$KF" describe trainingjob shapes-detector | grep -E "experimentUri|onnxUri|onnxParityMaxAbsDiff"

say "6. Where every artifact went"
"$KF" store tree

printf '\nDemo finished in %ss. Triton keeps serving: `%s stop inferenceservice shapes` stops it.\n' \
  "$(( $(date +%s) - start ))" "$KF"
