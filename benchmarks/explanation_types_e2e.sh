#!/usr/bin/env bash
# Issue 11 end to end on real Fashion-MNIST, through the platform's own commands only:
# import -> train a plain CNN, a ProtoPNet and a concept-bottleneck model -> explain the same
# 300 test items with Grad-CAM (CNN), prototypes (ProtoPNet) and concepts (CBM) on a real Celery
# worker -> a within-subjects study of the three explanation types on the first 30 of those
# items (every participant sees all 30, 10 per condition, so every item is answered under every
# condition) -> 12 bots through the real pages -> the analysis.
# Usage: bash benchmarks/explanation_types_e2e.sh [VAR_DIR]   (needs dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
export STUDYPLATFORM_VAR_DIR="${1:-/tmp/e2e-var}"
export DJANGO_SETTINGS_MODULE=studyplatform.settings.base
M=(.venv/bin/python manage.py)
IDX=/usr/share/datasets/fashion-mnist
LIMIT="${LIMIT:-300}"
mkdir -p "$STUDYPLATFORM_VAR_DIR/log" "$STUDYPLATFORM_VAR_DIR/broker/in" "$STUDYPLATFORM_VAR_DIR/broker/control"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
"${M[@]}" migrate -v0
"${M[@]}" shell -v 0 -c "from django.contrib.auth import get_user_model as g; U=g(); U.objects.filter(username='researcher').exists() or U.objects.create_superuser('researcher', password='pw-researcher')"
# what an earlier run of this script already did is not done again
trained() {
  "${M[@]}" shell -v 0 -c "
from labeling.models import TrainingRun
r = TrainingRun.objects.filter(architecture='$1', status='succeeded').order_by('pk').last()
print(r.classifier.name if r and r.classifier else '')"
}
if ! "${M[@]}" shell -v 0 -c "from explanations.models import Dataset; import sys; sys.exit(0 if Dataset.objects.filter(name='fashion-mnist').exists() else 1)"; then
  stamp "import"
  "${M[@]}" dataset_import --idx "$IDX" --name fashion-mnist
fi
for arch in cnn protopnet cbm; do
  if [ -z "$(trained $arch)" ]; then
    stamp "train $arch"
    extra=(); [ "$arch" = cnn ] && extra=(--folds 2 --epochs 3)
    "${M[@]}" label_train fashion-mnist --architecture "$arch" "${extra[@]}" --owner researcher | tail -3
  fi
done
names="$(trained cnn)
$(trained protopnet)
$(trained cbm)"
CNN=$(echo "$names" | sed -n 1p); PROTO=$(echo "$names" | sed -n 2p); CBM=$(echo "$names" | sed -n 3p)
.venv/bin/python -m celery -A studyplatform worker -Q gpu,cpu --concurrency 1 --without-gossip \
  --without-mingle --hostname "e2e-$$@%h" --loglevel INFO > "$STUDYPLATFORM_VAR_DIR/log/worker.log" 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null || true' EXIT
stamp "explain $LIMIT test items three ways"
"${M[@]}" explain --model "$CNN" --dataset fashion-mnist --method gradcam --split test --limit "$LIMIT" --wait | tail -2
"${M[@]}" explain --model "$PROTO" --dataset fashion-mnist --method prototypes --split test --limit "$LIMIT" --wait | tail -2
"${M[@]}" explain --model "$CBM" --dataset fashion-mnist --method concepts --split test --limit "$LIMIT" --wait | tail -2
cat > "$STUDYPLATFORM_VAR_DIR/explanation-types.yaml" <<YAML
version: 1
title: Heatmaps, prototypes or concepts? (Fashion-MNIST)
slug: explanation-types-30
model: "$CNN"
dataset: fashion-mnist
items: {split: test, limit: 30}
conditions:
  - {name: gradcam, method: gradcam, label: Grad-CAM heatmap}
  - {name: prototypes, method: prototypes, model: "$PROTO", prototypes: 3}
  - {name: concepts, method: concepts, model: "$CBM", max_concepts: 8}
condition_assignment: within
tasks: [{type: agreement}, {type: distinction}]
task_assignment: between
trials: {attention_checks: 1, seed: 0}
questionnaires: [{type: likert_understanding}]
YAML
stamp "create the study"
"${M[@]}" study_create "$STUDYPLATFORM_VAR_DIR/explanation-types.yaml" --owner researcher --launch | tail -3
stamp "pilot with 12 bots"
"${M[@]}" study_pilot explanation-types-30 --bots 12 | tail -3
stamp "analyse"
"${M[@]}" analyze explanation-types-30 --html "$STUDYPLATFORM_VAR_DIR/report.html" | sed -n '/ame items/,/^$/p' | head -30
stamp "done"
"${M[@]}" shell -v 0 -c "
from labeling.models import TrainingRun
for r in TrainingRun.objects.filter(status='succeeded').order_by('pk'):
    print(f'{r.architecture:10s} test accuracy {r.test_accuracy:.4f} on {r.test_items} items, {r.seconds:.0f} s')
"
