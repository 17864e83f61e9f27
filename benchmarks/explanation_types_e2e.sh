#!/usr/bin/env bash
# Issue 11 end to end on real Fashion-MNIST, through the platform's own commands only:
# import -> train a plain CNN, a ProtoPNet and a concept-bottleneck model -> explain the same
# 300 test items with Grad-CAM (CNN), prototypes (ProtoPNet) and concepts (CBM) on a real Celery
# worker -> a within-subjects study of the three explanation types -> bots -> analysis.
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
"${M[@]}" shell -c "from django.contrib.auth import get_user_model as g; U=g(); U.objects.filter(username='researcher').exists() or U.objects.create_superuser('researcher', password='pw-researcher')"
stamp "import"
"${M[@]}" dataset_import --idx "$IDX" --name fashion-mnist
stamp "train the plain CNN"
"${M[@]}" label_train fashion-mnist --folds 2 --epochs 3 --owner researcher | tail -3
stamp "train ProtoPNet"
"${M[@]}" label_train fashion-mnist --architecture protopnet --owner researcher | tail -3
stamp "train the concept-bottleneck model"
"${M[@]}" label_train fashion-mnist --architecture cbm --owner researcher | tail -3
names=$("${M[@]}" shell -c "
from labeling.models import TrainingRun
for a in ('cnn', 'protopnet', 'cbm'):
    print(TrainingRun.objects.filter(architecture=a, status='succeeded').latest('pk').classifier.name)
")
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
slug: explanation-types
model: "$CNN"
dataset: fashion-mnist
items: {split: test}
conditions:
  - {name: gradcam, method: gradcam, label: Grad-CAM heatmap}
  - {name: prototypes, method: prototypes, model: "$PROTO", prototypes: 3}
  - {name: concepts, method: concepts, model: "$CBM", max_concepts: 8}
condition_assignment: within
tasks: [{type: agreement}, {type: distinction}]
task_assignment: between
trials: {model_correct: 5, model_incorrect: 5, attention_checks: 1, seed: 0}
questionnaires: [{type: likert_understanding}]
YAML
stamp "create the study"
"${M[@]}" study_create "$STUDYPLATFORM_VAR_DIR/explanation-types.yaml" --owner researcher --launch | tail -3
stamp "pilot with 12 bots"
"${M[@]}" study_pilot explanation-types --bots 12 | tail -3
stamp "analyse"
"${M[@]}" analyze explanation-types --html "$STUDYPLATFORM_VAR_DIR/report.html" | sed -n '/ame items/,/^$/p' | head -30
stamp "done"
"${M[@]}" shell -c "
from labeling.models import TrainingRun
for r in TrainingRun.objects.filter(status='succeeded').order_by('pk'):
    print(f'{r.architecture:10s} test accuracy {r.test_accuracy:.4f} on {r.test_items} items, {r.seconds:.0f} s')
"
