"""Study engine: spec-built designs (arms, conditions, practice, attention checks,
questionnaires), every task type, hashed crowd ids (Prolific, MTurk, classroom), per-trial
timing and tab visibility."""

import hashlib

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import studies.models


def forwards(apps, schema_editor):
    Participant = apps.get_model("studies", "Participant")
    Trial = apps.get_model("studies", "Trial")
    for p in Participant.objects.exclude(prolific_pid="").select_related("study"):
        p.crowd_source = "prolific"
        p.crowd_id_hash = hashlib.sha256(
            f"{p.study.crowd_salt}:prolific:{p.prolific_pid}".encode()
        ).hexdigest()
        p.save(update_fields=["crowd_source", "crowd_id_hash"])
    # Before this migration each participant's arm was their task.
    for t in Trial.objects.select_related("study"):
        t.arm = t.task_type
        t.condition = t.study.method
        t.save(update_fields=["arm", "condition"])


TASK_CHOICES = [
    ("agreement", "Agreement"),
    ("distinction", "Distinction"),
    ("output_prediction", "Output prediction"),
    ("similarity", "Prototype-region similarity"),
    ("region_annotation", "Region annotation"),
    ("free_text", "Free text"),
    ("likert_understanding", "Self-rated understanding"),
    ("tradeoff", "Interpretability-accuracy trade-off"),
    ("demographics", "Demographics"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("explanations", "0001_initial"),
        ("studies", "0005_participant_progress"),
    ]

    operations = [
        # --- study
        migrations.AlterField(
            model_name="study",
            name="status",
            field=models.CharField(
                choices=[("draft", "Draft"), ("open", "Open"), ("paused", "Paused"), ("closed", "Closed")],
                default="draft",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="crowd_salt",
            field=models.CharField(
                default=studies.models._crowd_salt, help_text="Salt of the hashed crowd ids.", max_length=64
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="join_code",
            field=models.CharField(
                blank=True, help_text="Classroom join code.", max_length=12, null=True, unique=True
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="launched_at",
            field=models.DateTimeField(blank=True, help_text="Spec frozen since.", null=True),
        ),
        # --- trial
        migrations.AddField(
            model_name="trial",
            name="kind",
            field=models.CharField(
                choices=[
                    ("main", "Main trial"),
                    ("practice", "Practice (with feedback)"),
                    ("attention", "Attention check"),
                    ("survey", "Questionnaire"),
                ],
                default="main",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="trial", name="arm", field=models.CharField(blank=True, db_index=True, max_length=80)
        ),
        migrations.AddField(
            model_name="trial", name="condition", field=models.CharField(blank=True, max_length=50)
        ),
        migrations.AddField(model_name="trial", name="config", field=models.JSONField(default=dict)),
        migrations.AlterField(
            model_name="trial", name="task_type", field=models.CharField(choices=TASK_CHOICES, max_length=30)
        ),
        migrations.AlterField(
            model_name="trial",
            name="item",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="explanations.item"
            ),
        ),
        migrations.AlterField(model_name="trial", name="predicted_index", field=models.IntegerField(null=True)),
        migrations.AlterField(
            model_name="trial", name="predicted_label", field=models.CharField(blank=True, max_length=200)
        ),
        migrations.AlterField(model_name="trial", name="true_index", field=models.IntegerField(null=True)),
        migrations.AlterField(model_name="trial", name="model_correct", field=models.BooleanField(null=True)),
        migrations.AlterField(model_name="trial", name="correct_value", field=models.CharField(blank=True, max_length=32)),
        migrations.AlterField(model_name="trial", name="options", field=models.JSONField(default=list)),
        migrations.AlterField(model_name="trial", name="stimuli", field=models.JSONField(default=dict)),
        # --- participant
        migrations.RenameField(model_name="participant", old_name="task", new_name="arm"),
        migrations.AlterField(
            model_name="participant",
            name="arm",
            field=models.CharField(
                blank=True, help_text="Between-subjects cell / Latin-square row.", max_length=80
            ),
        ),
        migrations.AddField(
            model_name="participant",
            name="order_seed",
            field=models.BigIntegerField(blank=True, help_text="Seed of trial_order.", null=True),
        ),
        migrations.AddField(
            model_name="participant", name="shown_position", field=models.IntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="participant", name="shown_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="participant",
            name="crowd_source",
            field=models.CharField(
                blank=True,
                choices=[("", "Public link"), ("prolific", "Prolific"), ("mturk", "MTurk"), ("classroom", "Classroom")],
                default="",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="participant",
            name="crowd_id_hash",
            field=models.CharField(
                blank=True, help_text="SHA-256 of the study's salt and the crowd id.", max_length=64
            ),
        ),
        migrations.AddField(
            model_name="participant", name="mturk_assignment_id", field=models.CharField(blank=True, max_length=64)
        ),
        migrations.AddField(
            model_name="participant", name="mturk_hit_id", field=models.CharField(blank=True, max_length=64)
        ),
        migrations.AddField(
            model_name="participant", name="mturk_submit_to", field=models.CharField(blank=True, max_length=100)
        ),
        migrations.AddField(
            model_name="participant",
            name="roster_name",
            field=models.CharField(blank=True, help_text="Classroom roster entry.", max_length=100),
        ),
        migrations.AddField(
            model_name="participant",
            name="is_preview",
            field=models.BooleanField(default=False, help_text="A researcher's preview."),
        ),
        # --- response
        migrations.AlterField(
            model_name="response",
            name="answer",
            field=models.TextField(help_text="Choice value, text as typed, or JSON; '' = timed out."),
        ),
        migrations.AddField(
            model_name="response",
            name="data",
            field=models.JSONField(default=dict, help_text="Structured answer (sliders, mask file...)."),
        ),
        migrations.AlterField(
            model_name="response",
            name="is_correct",
            field=models.BooleanField(help_text="None: not scored (ratings, text).", null=True),
        ),
        migrations.AlterField(
            model_name="response",
            name="rt_ms",
            field=models.PositiveIntegerField(blank=True, help_text="Client-measured response time, ms.", null=True),
        ),
        migrations.AddField(
            model_name="response",
            name="shown_at",
            field=models.DateTimeField(blank=True, help_text="Server time first shown.", null=True),
        ),
        migrations.AddField(
            model_name="response",
            name="tab_hidden",
            field=models.BooleanField(default=False, help_text="Tab hidden while on the trial."),
        ),
        migrations.AddField(
            model_name="response", name="hidden_ms", field=models.PositiveIntegerField(blank=True, null=True)
        ),
        migrations.AddField(model_name="response", name="timed_out", field=models.BooleanField(default=False)),
        migrations.AlterField(
            model_name="response",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now, help_text="Server time answered."),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="participant", name="participant_unique_prolific_pid"),
        migrations.RemoveField(model_name="participant", name="prolific_pid"),
        migrations.AddConstraint(
            model_name="participant",
            constraint=models.UniqueConstraint(
                condition=models.Q(("crowd_id_hash", ""), _negated=True),
                fields=("study", "crowd_source", "crowd_id_hash"),
                name="participant_unique_crowd_id",
            ),
        ),
    ]
