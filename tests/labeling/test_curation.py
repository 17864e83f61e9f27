"""The curation queue: ranking into entries, assignments, decisions, undo, consensus,
agreement, export and label versions (services; the pages are tested elsewhere)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from labeling import curation
from labeling.curation import DecisionConflict, QueueFilter
from labeling.models import (
    Assignment,
    Decision,
    DecisionLogError,
    LabelVersion,
    QueueEntry,
    RunStatus,
)
from labeling.services import LabelingError, version_labels

from .conftest import make_run


def _entry(project, item_index: int) -> QueueEntry:
    item = project.dataset.items.order_by("pk")[item_index]
    return QueueEntry.objects.get(project=project, item=item)


def test_the_queue_puts_the_flagged_items_first_lowest_self_confidence_first(project):
    assert project.status == RunStatus.SUCCEEDED, project.error
    entries = list(QueueEntry.objects.filter(project=project).order_by("rank"))
    names = [e.item.name for e in entries]
    # three flagged ants that look like bees, then the near-duplicate pair (10, 20)
    assert names[:3] == ["train-00000", "train-00001", "train-00002"]
    assert [e.flagged for e in entries[:3]] == [True] * 3
    assert [e.suggested_label for e in entries[:3]] == [1, 1, 1]
    assert [round(e.score, 4) for e in entries[:3]] == [0.02, 0.04, 0.06]
    assert sorted(names[3:]) == ["train-00010", "train-00020"]
    assert {e.issue_type for e in entries[3:]} == {"near_duplicate"}
    assert entries[0].top3[0] == {"index": 1, "probability": 0.9}
    summary = project.summary
    assert summary["items"] == 30 and summary["flagged"] == 3 and summary["entries"] == 5
    assert summary["joint"][0][1] == 3
    assert summary["confusion"][0] == [7, 3, 0]
    # neighbours come from the right classes and never include the item itself
    labels = dict(project.dataset.items.values_list("pk", "label_index"))
    first = entries[0]
    assert first.neighbours["given"] and first.item_id not in first.neighbours["given"]
    assert all(labels[i] == 0 for i in first.neighbours["given"])
    assert all(labels[i] == 1 for i in first.neighbours["other"])
    dup = _entry(project, 10)
    assert dup.near_duplicates == [project.dataset.items.order_by("pk")[20].pk]


def test_overlap_assigns_each_entry_to_that_many_curators_round_robin(
    finished_run, researcher, curator, second_curator
):
    project = curation.curation_project_create(
        run=finished_run,
        name="two",
        owner=researcher,
        curators=[curator, second_curator, researcher],
        overlap=2,
        enqueue=False,
    )
    curation.curation_project_build(project_id=project.pk)
    for entry in QueueEntry.objects.filter(project=project):
        assert entry.assignments.count() == 2
    per_curator = [Assignment.objects.filter(curator=u).count() for u in (curator, second_curator)]
    assert sum(per_curator) + Assignment.objects.filter(curator=researcher).count() == 10
    with pytest.raises(LabelingError, match="overlap 4"):
        curation.curation_project_create(
            run=finished_run, name="x", owner=researcher, curators=[curator], overlap=4
        )


def test_a_decision_is_logged_once_and_a_stale_page_is_refused(project, curator):
    entry = _entry(project, 0)
    d, created = curation.decision_record(
        project=project, entry=entry, curator=curator, action="relabel", to_label=1
    )
    assert created and d.from_label == 0 and d.to_label == 1
    # the same decision again (a double click): not logged twice
    again, created = curation.decision_record(
        project=project, entry=entry, curator=curator, action="relabel", to_label=1
    )
    assert not created and again.pk == d.pk
    # a different decision from a page that had not seen the first: refused, nothing logged
    with pytest.raises(DecisionConflict):
        curation.decision_record(
            project=project, entry=entry, curator=curator, action="keep", expected=None
        )
    assert Decision.objects.count() == 1
    # a change of mind from the up-to-date page is logged and becomes the standing decision
    keep, created = curation.decision_record(
        project=project, entry=entry, curator=curator, action="keep", expected=d.pk
    )
    assert created and keep.to_label == 0
    assert Assignment.objects.get(entry=entry, curator=curator).decision_id == keep.pk


@pytest.mark.parametrize(
    ("action", "to_label", "message"),
    [
        ("relabel", None, "needs a label"),
        ("relabel", 3, "outside 0..2"),
        ("rename", 1, "action must be"),
    ],
)
def test_bad_decisions_are_refused_and_log_nothing(project, curator, action, to_label, message):
    with pytest.raises(LabelingError, match=message):
        curation.decision_record(
            project=project,
            entry=_entry(project, 0),
            curator=curator,
            action=action,
            to_label=to_label,
        )
    assert not Decision.objects.exists()


def test_relabel_to_the_given_label_is_a_keep_and_strangers_cannot_decide(
    project, curator, second_curator
):
    d, _ = curation.decision_record(
        project=project, entry=_entry(project, 0), curator=curator, action="relabel", to_label=0
    )
    assert d.action == "keep"
    with pytest.raises(LabelingError, match="not assigned"):
        curation.decision_record(
            project=project, entry=_entry(project, 1), curator=second_curator, action="keep"
        )


def test_undo_withdraws_the_last_decision_and_keeps_both_rows(project, curator):
    first, second = _entry(project, 0), _entry(project, 1)
    a, _ = curation.decision_record(
        project=project, entry=first, curator=curator, action="relabel", to_label=1
    )
    b, _ = curation.decision_record(
        project=project, entry=second, curator=curator, action="relabel", to_label=2
    )
    change, _ = curation.decision_record(
        project=project, entry=second, curator=curator, action="keep", expected=b.pk
    )
    undo = curation.decision_undo(project=project, curator=curator)
    assert undo.undoes_id == change.pk and undo.entry_id == second.pk
    # the entry goes back to the decision before the withdrawn one
    assert Assignment.objects.get(entry=second, curator=curator).decision_id == b.pk
    curation.decision_undo(project=project, curator=curator)
    assert Assignment.objects.get(entry=second, curator=curator).decision_id is None
    curation.decision_undo(project=project, curator=curator)
    assert Assignment.objects.get(entry=first, curator=curator).decision_id is None
    assert curation.decision_undo(project=project, curator=curator) is None
    assert list(Decision.objects.values_list("action", flat=True)) == [
        "relabel",
        "relabel",
        "keep",
        "undo",
        "undo",
        "undo",
    ]
    assert Decision.objects.get(pk=a.pk).to_label == 1  # the log is untouched


def test_the_log_cannot_be_changed_or_deleted(project, curator):
    d, _ = curation.decision_record(
        project=project, entry=_entry(project, 0), curator=curator, action="keep"
    )
    d.to_label = 2
    with pytest.raises(DecisionLogError):
        d.save()
    with pytest.raises(DecisionLogError):
        d.delete()
    assert Decision.objects.get(pk=d.pk).to_label == 0


def test_queue_order_filters_and_skipping(project, curator):
    flt = QueueFilter()
    first = curation.queue_next(project, curator, flt)
    assert first.entry.rank == 0
    assert curation.queue_next(project, curator, flt, after_rank=0).entry.rank == 1
    # past the end it wraps to the first pending entry
    assert curation.queue_next(project, curator, flt, after_rank=99).entry.rank == 0
    cell = QueueFilter(cell=(0, 1))
    assert [a.entry.rank for a in curation.assignments_for(project, curator, cell)] == [0, 1, 2]
    given = QueueFilter(given=2)
    assert [a.entry.item.name for a in curation.assignments_for(project, curator, given)] == [
        "train-00020"
    ]
    curation.decision_record(project=project, entry=first.entry, curator=curator, action="unsure")
    assert curation.queue_next(project, curator, flt).entry.rank == 1
    unsure = QueueFilter(status="unsure")
    assert [a.entry.rank for a in curation.assignments_for(project, curator, unsure)] == [0]
    assert curation.queue_counts(project, curator, flt) == {"total": 5, "decided": 1, "pending": 4}
    parsed = QueueFilter.from_query({"cell": "0,1", "given": "x", "status": "bogus"})
    assert parsed == QueueFilter(cell=(0, 1))


def _two_curator_project(finished_run, researcher, curator, second_curator):
    project = curation.curation_project_create(
        run=finished_run,
        name="pair",
        owner=researcher,
        curators=[curator, second_curator],
        overlap=2,
        enqueue=False,
    )
    return curation.curation_project_build(project_id=project.pk)


def test_consensus_and_krippendorffs_alpha_by_hand(
    finished_run, researcher, curator, second_curator
):
    project = _two_curator_project(finished_run, researcher, curator, second_curator)
    e = [_entry(project, i) for i in (0, 1, 2, 10)]
    votes = [  # (curator 1, curator 2) on four entries
        (("relabel", 1), ("relabel", 1)),  # agreed: bee
        (("relabel", 2), ("relabel", 2)),  # agreed: cat
        (("relabel", 1), ("relabel", 2)),  # disputed
        (("relabel", 2), ("relabel", 2)),  # agreed: cat (given bee)
    ]
    for entry, pair in zip(e, votes, strict=True):
        for user, (action, label) in zip((curator, second_curator), pair, strict=True):
            curation.decision_record(
                project=project, entry=entry, curator=user, action=action, to_label=label
            )
    curation.decision_record(
        project=project, entry=_entry(project, 20), curator=curator, action="unsure"
    )
    by_entry = {c.entry.pk: c for c in curation.project_consensus(project)}
    assert (by_entry[e[0].pk].status, by_entry[e[0].pk].label) == ("agreed", 1)
    assert by_entry[e[2].pk].status == "disputed" and by_entry[e[2].pk].label is None
    # one of the two assigned curators has voted: partial, nothing changes yet
    assert by_entry[_entry(project, 20).pk].status == "partial"
    curation.decision_record(
        project=project, entry=_entry(project, 20), curator=second_curator, action="unsure"
    )
    by_entry = {c.entry.pk: c for c in curation.project_consensus(project)}
    assert by_entry[_entry(project, 20).pk].status == "unsure"
    # Coincidences: o(bee,bee)=2, o(cat,cat)=4, o(bee,cat)=o(cat,bee)=1; n_bee=3, n_cat=5, n=8.
    # alpha = 1 - (n - 1) * (o_bc + o_cb) / (2 * n_bee * n_cat) = 1 - 7 * 2 / 30 = 8/15.
    assert curation.project_agreement(project).value == pytest.approx(8 / 15)


def test_export_apply_and_reimport_make_new_versions_and_keep_the_old(project, curator, researcher):
    curation.decision_record(
        project=project, entry=_entry(project, 0), curator=curator, action="relabel", to_label=1
    )
    curation.decision_record(
        project=project, entry=_entry(project, 1), curator=curator, action="remove"
    )
    curation.decision_record(
        project=project, entry=_entry(project, 2), curator=curator, action="keep"
    )
    rows = list(csv.DictReader(io.StringIO(curation.export_csv(project))))
    assert [(r["item_name"], r["outcome"], r["new_label"]) for r in rows] == [
        ("train-00000", "relabelled", "1"),
        ("train-00001", "removed", ""),
        ("train-00002", "kept", "0"),
    ]
    payload = json.loads(curation.export_json(project))
    assert payload["labels"][0]["votes"] == {"curator": 1} and payload["labels"][0]["rank"] == 1
    assert payload["provenance"]["base_label_version"] == 1
    assert payload["provenance"]["decisions_logged"] == 3
    v1 = project.label_version
    before = version_labels(v1)
    v2 = curation.label_version_from_project(project=project, user=researcher)
    assert (v2.number, v2.parent_id, v2.changed, v2.removed) == (2, v1.pk, 1, 1)
    items = list(project.dataset.items.order_by("pk"))
    labels2 = version_labels(v2)
    assert labels2[items[0].pk] == 1 and labels2[items[1].pk] is None and labels2[items[2].pk] == 0
    assert version_labels(v1) == before  # the old version is unchanged
    with pytest.raises(LabelingError, match="already produced"):
        curation.label_version_from_project(project=project, user=researcher)
    # the exported CSV re-imported on v1 gives the same labels as v2
    v3 = curation.label_version_import(
        version=v1, data=curation.export_csv(project).encode(), filename="fix.csv"
    )
    assert version_labels(v3) == labels2 and v3.source == "upload"


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"item_id,new_label\r\n999999,1\r\n", "x.csv", "not in"),
        (b"item_id,new_label\r\n{first},dragon\r\n", "x.csv", "not a class"),
        (b"item_id,new_label\r\n{first},7\r\n", "x.csv", "outside"),
        (b"name,label\r\n", "x.csv", "header"),
        (b"{not json", "x.json", "not valid JSON"),
        (b'{"labels": []}', "x.json", "no rows"),
        (b"\xff\xfe\x00", "x.csv", "UTF-8"),
    ],
)
def test_a_bad_import_creates_no_version(project, data, filename, message):
    first = project.dataset.items.order_by("pk").first().pk
    data = data.replace(b"{first}", str(first).encode())
    with pytest.raises(LabelingError, match=message):
        curation.label_version_import(version=project.label_version, data=data, filename=filename)
    assert LabelVersion.objects.count() == 1


def test_a_lasso_selection_adds_items_to_the_end_of_the_queue(project, curator):
    items = list(project.dataset.items.order_by("pk"))
    ids = curation.selection_add(project=project, item_ids=[items[0].pk, items[5].pk])
    assert ids[0] == _entry(project, 0).pk
    added = QueueEntry.objects.get(pk=ids[1])
    assert added.rank == 5 and added.issue_type == "selected" and not added.flagged
    project.refresh_from_db()
    assert project.summary["entries"] == 6 and project.summary["selected"] == 1
    assert Assignment.objects.filter(entry=added, curator=curator).exists()
    with pytest.raises(LabelingError, match="not in training run"):
        curation.selection_add(project=project, item_ids=[10**9])


def test_a_project_on_an_unfinished_run_is_refused(small_dataset, researcher):
    run = make_run(small_dataset)
    run.status = RunStatus.RUNNING
    run.save()
    with pytest.raises(LabelingError, match="not finished"):
        curation.curation_project_create(run=run, name="x", owner=researcher)


def test_throughput_counts_decisions_per_minute(project, curator):
    for i in range(3):
        curation.decision_record(
            project=project, entry=_entry(project, i), curator=curator, action="keep"
        )
    stats = curation.curator_throughput(project)[curator.pk]
    assert stats["decisions"] == 3


def test_export_and_agreement_before_any_counted_vote(project, curator):
    """No decisions, or only "unsure": alpha is undefined with a reason, exports still work."""
    assert curation.project_agreement(project).reason == "no counted votes yet"
    assert json.loads(curation.export_json(project))["labels"] == []
    curation.decision_record(
        project=project, entry=_entry(project, 0), curator=curator, action="unsure"
    )
    payload = json.loads(curation.export_json(project))
    assert payload["provenance"]["krippendorff_alpha"] is None
    assert [r["outcome"] for r in payload["labels"]] == ["unsure"]
