"""The curation queue: build a ranked queue from a training run, record decisions, reach a
consensus across curators, and turn it into a new label version.

Bäuerle, Neumann & Ropinski, CGF 39(3) (2020): the classifier's out-of-sample probabilities
rank the items (confident learning, Northcutt et al., JAIR 2021); three error types are shown
(systematic class-pair confusions, individual mislabels, near-duplicates with different labels);
curators see the image, the given label, the model's top-3, Grad-CAM (Selvaraju et al., ICCV
2017) for the given and the predicted class, and the nearest neighbours from both classes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from .models import (
    Action,
    Assignment,
    CurationProject,
    Decision,
    ItemLabel,
    LabelVersion,
    QueueEntry,
    RunStatus,
    Scope,
    Score,
    TrainingRun,
)
from .services import LabelingError, label_version_create, run_arrays, version_labels

logger = logging.getLogger(__name__)

NEIGHBOURS = 4
PROJECTION_MAX = 3000
ENTRY_BATCH = 2000
REMOVED = "remove"
FILTER_METHODS = ("confident_learning", "prune_by_noise_rate")
# Cosine similarity of final-model embeddings above which two items count as near-duplicates.
# On Fashion-MNIST (run of 60,000 items) 0.98 gave 6,392 pairs with different labels, mostly
# ordinary Shirt/T-shirt look-alikes; 0.99 gives ~200, the pairs that look nearly the same.
NEAR_DUPLICATE_THRESHOLD = 0.99
NEAR_DUPLICATE_MAX_PAIRS = 500


# --------------------------------------------------------------------------------------------
# Building a project


def curation_project_create(
    *,
    run: TrainingRun,
    name: str,
    owner,
    score: str = Score.SELF_CONFIDENCE,
    method: str = "confident_learning",
    scope: str = Scope.FLAGGED,
    overlap: int = 1,
    curators=(),
    enqueue: bool = True,
) -> CurationProject:
    """Create a project on a finished run; its queue is built on the ``cpu`` queue.

    Raises:
        LabelingError: the run has not succeeded, an unknown score/method/scope, or an overlap
            larger than the number of curators.
    """
    if run.status != RunStatus.SUCCEEDED:
        raise LabelingError(f"training run {run.pk} has not finished successfully")
    if run.architecture != "cnn":
        raise LabelingError(
            f"training run {run.pk} trained a {run.get_architecture_display()}, which has no "
            "out-of-sample probabilities; rank labels with a cross-fitted CNN run"
        )
    if score not in Score.values:
        raise LabelingError(f"score must be one of {Score.values}")
    if scope not in Scope.values:
        raise LabelingError(f"scope must be one of {Scope.values}")
    if method not in FILTER_METHODS:
        raise LabelingError(f"method must be one of {list(FILTER_METHODS)}")
    curators = list(curators) or [owner]
    if not 1 <= int(overlap) <= len(curators):
        raise LabelingError(
            f"overlap {overlap} needs at least that many curators (have {len(curators)})"
        )
    from .tasks import curation_project_build_task

    with transaction.atomic():
        project = CurationProject.objects.create(
            name=name.strip() or f"Curation of {run.dataset.name}",
            dataset=run.dataset,
            run=run,
            label_version=run.label_version,
            score=score,
            method=method,
            scope=scope,
            overlap=int(overlap),
            owner=owner,
        )
        project.curators.set(curators)
        if enqueue:
            transaction.on_commit(lambda: curation_project_build_task.delay(project.pk))
    return project


@dataclass
class RunContext:
    """A finished run's arrays with the labels it was trained on (index = array row)."""

    item_ids: np.ndarray
    pred_probs: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray
    row_of: dict[int, int]
    class_names: list[str]

    @property
    def unit(self) -> np.ndarray:
        norms = np.linalg.norm(self.embeddings, axis=1, keepdims=True)
        return self.embeddings / np.maximum(norms, 1e-12)


def run_context(run: TrainingRun) -> RunContext:
    arrays = run_arrays(run)
    labels_of = version_labels(run.label_version)
    ids = arrays["item_ids"]
    labels = np.array([labels_of[int(i)] for i in ids], dtype=np.int64)
    names = list(run.dataset.class_names or [str(i) for i in range(arrays["pred_probs"].shape[1])])
    return RunContext(
        item_ids=ids,
        pred_probs=arrays["pred_probs"].astype(np.float64),
        embeddings=arrays["embeddings"],
        labels=labels,
        row_of={int(i): r for r, i in enumerate(ids)},
        class_names=names,
    )


def _neighbours(ctx: RunContext, unit: np.ndarray, rows: np.ndarray, targets: np.ndarray):
    """For each row, the item ids of the NEIGHBOURS nearest items (cosine) labelled
    ``targets[i]``, excluding the row itself: list of lists."""
    out: list[list[int]] = [[] for _ in rows]
    for cls in np.unique(targets):
        if cls < 0:
            continue
        members = np.flatnonzero(ctx.labels == cls)
        if not len(members):
            continue
        which = np.flatnonzero(targets == cls)
        for start in range(0, len(which), 1024):
            part = which[start : start + 1024]
            sims = unit[rows[part]] @ unit[members].T
            own = members[None, :] == rows[part][:, None]
            sims[own] = -np.inf
            k = min(NEIGHBOURS, len(members))
            top = (
                np.argpartition(-sims, k - 1, axis=1)[:, :k]
                if k < len(members)
                else np.tile(np.arange(len(members)), (len(part), 1))
            )
            for j, p in enumerate(part):
                order = top[j][np.argsort(-sims[j, top[j]])]
                out[p] = [int(ctx.item_ids[members[o]]) for o in order if np.isfinite(sims[j, o])]
    return out


def _projection(ctx: RunContext, candidates: np.ndarray, seed: int = 0):
    """2-D t-SNE (van der Maaten & Hinton, JMLR 2008; scikit-learn) of the candidates plus a
    class-stratified sample of the other items, at most PROJECTION_MAX points: (rows, xy)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    chosen = list(candidates[: PROJECTION_MAX // 2])
    rest = np.setdiff1d(np.arange(len(ctx.labels)), np.asarray(chosen, dtype=np.int64))
    room = PROJECTION_MAX - len(chosen)
    if room > 0 and len(rest):
        take = rng.choice(rest, size=min(room, len(rest)), replace=False)
        chosen.extend(int(t) for t in take)
    rows = np.array(sorted(set(int(c) for c in chosen)), dtype=np.int64)
    if len(rows) < 5:
        return rows, np.zeros((len(rows), 2))
    emb = ctx.embeddings[rows].astype(np.float64)
    perplexity = float(min(30, max(2, (len(rows) - 1) / 3)))
    # One OpenMP thread: on a busy machine sklearn's Barnes-Hut threads spin (30 points took 30 s
    # beside a training run, 0.15 s on one thread); 3,000 points take ~10 s.
    with threadpool_limits(1):
        xy = TSNE(
            n_components=2, init="pca", random_state=seed, perplexity=perplexity, max_iter=500
        ).fit_transform(emb)
    lo, hi = xy.min(0), xy.max(0)
    xy = (xy - lo) / np.maximum(hi - lo, 1e-12)
    return rows, xy


def curation_project_build(*, project_id: int) -> CurationProject:
    """Rank the run's items, store the queue entries, the overview and the assignments.

    A failure is recorded on the project with its reason. A built project is returned as is.
    """
    from .quality import class_pair_confusions, find_label_issues, issue_types, near_duplicates

    project = CurationProject.objects.select_related("run", "dataset").get(pk=project_id)
    if project.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        return project

    def status(message: str) -> None:
        CurationProject.objects.filter(pk=project.pk).update(
            status=RunStatus.RUNNING, message=message
        )

    try:
        status("ranking")
        ctx = run_context(project.run)
        issues = find_label_issues(
            ctx.labels, ctx.pred_probs, rank_by=project.score, method=project.method
        )
        pairs = class_pair_confusions(issues.joint, ctx.class_names)
        status("finding near-duplicates")
        dups = near_duplicates(ctx.embeddings, ctx.labels, threshold=NEAR_DUPLICATE_THRESHOLD)
        dups = type(dups)(
            dups.pairs[:NEAR_DUPLICATE_MAX_PAIRS], dups.similarity[:NEAR_DUPLICATE_MAX_PAIRS]
        )
        types = issue_types(issues, pairs, dups)
        if project.scope == Scope.ALL:
            candidates = np.argsort(issues.score, kind="stable")
        else:
            dup_rows = np.unique(dups.pairs.ravel()) if len(dups.pairs) else np.array([], int)
            extra = np.setdiff1d(dup_rows, issues.ranked)
            extra = extra[np.argsort(issues.score[extra], kind="stable")]
            candidates = np.concatenate([issues.ranked, extra]).astype(np.int64)
        status("projecting embeddings (t-SNE)")
        proj_rows, xy = _projection(ctx, candidates)
        xy_of = {int(r): (float(x), float(y)) for r, (x, y) in zip(proj_rows, xy, strict=True)}
        status("finding neighbours")
        predicted = ctx.pred_probs.argmax(1)
        unit = ctx.unit
        other = np.where(
            (issues.suggested >= 0) & (issues.suggested != ctx.labels), issues.suggested, predicted
        )
        given_nn = _neighbours(ctx, unit, candidates, ctx.labels[candidates])
        other_nn = _neighbours(ctx, unit, candidates, other[candidates])
        partners: dict[int, list[int]] = defaultdict(list)
        for a, b in dups.pairs:
            partners[int(a)].append(int(ctx.item_ids[b]))
            partners[int(b)].append(int(ctx.item_ids[a]))
        status("storing the queue")
        entries = []
        for rank, row in enumerate(candidates):
            row = int(row)
            probs = ctx.pred_probs[row]
            top = np.argsort(-probs, kind="stable")[:3]
            x, y = xy_of.get(row, (None, None))
            entries.append(
                QueueEntry(
                    project=project,
                    item_id=int(ctx.item_ids[row]),
                    rank=rank,
                    score=float(issues.score[row]),
                    given_label=int(ctx.labels[row]),
                    suggested_label=int(issues.suggested[row]),
                    predicted_label=int(predicted[row]),
                    flagged=bool(issues.mask[row]),
                    issue_type=str(types[row]),
                    top3=[{"index": int(t), "probability": round(float(probs[t]), 4)} for t in top],
                    neighbours={"given": given_nn[rank], "other": other_nn[rank]},
                    near_duplicates=partners.get(row, [])[:5],
                    x=x,
                    y=y,
                )
            )
        confusion = np.zeros((len(ctx.class_names),) * 2, dtype=np.int64)
        np.add.at(confusion, (ctx.labels, predicted), 1)
        entry_rows = set(int(r) for r in candidates)
        summary = {
            "items": int(len(ctx.labels)),
            "flagged": int(issues.mask.sum()),
            "entries": len(entries),
            "near_duplicate_pairs": int(len(dups.pairs)),
            "class_names": ctx.class_names,
            "joint": issues.joint.tolist(),
            "confusion": confusion.tolist(),
            "thresholds": [round(float(t), 4) for t in issues.thresholds],
            "issue_types": dict(Counter(str(t) for t in types[candidates])),
            "pairs": [
                {
                    "given": p.given,
                    "suggested": p.suggested,
                    "count": p.count,
                    "share_of_given": round(float(p.share_of_given), 4),
                    "systematic": bool(p.is_systematic),
                }
                for p in pairs[:30]
            ],
            "projection": {
                "item_ids": [int(ctx.item_ids[r]) for r in proj_rows],
                "x": [round(float(v), 4) for v in xy[:, 0]] if len(proj_rows) else [],
                "y": [round(float(v), 4) for v in xy[:, 1]] if len(proj_rows) else [],
                "label": [int(ctx.labels[r]) for r in proj_rows],
                "flagged": [bool(issues.mask[r]) for r in proj_rows],
                "queued": [int(r) in entry_rows for r in proj_rows],
                "method": "t-SNE (scikit-learn), cosine-normalised final-model embeddings",
            },
        }
        curators = sorted(project.curators.all(), key=lambda u: u.pk)
        with transaction.atomic():
            QueueEntry.objects.filter(project=project).delete()
            created = []
            for start in range(0, len(entries), ENTRY_BATCH):
                created.extend(QueueEntry.objects.bulk_create(entries[start : start + ENTRY_BATCH]))
            _assign(project, created, curators)
            CurationProject.objects.filter(pk=project.pk).update(
                status=RunStatus.SUCCEEDED, message="ready", summary=summary
            )
    except Exception as exc:  # recorded on the project; the worker goes on
        logger.exception("curation project %s failed", project.pk)
        CurationProject.objects.filter(pk=project.pk).update(
            status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", message="failed"
        )
    project.refresh_from_db()
    return project


def _assign(project: CurationProject, entries: list[QueueEntry], curators: list) -> None:
    """Round-robin: the entry at rank r goes to curators (r + j) mod n, j < overlap."""
    n = len(curators)
    overlap = min(project.overlap, n)
    rows = [
        Assignment(entry=e, curator=curators[(e.rank + j) % n], rank=e.rank)
        for e in entries
        for j in range(overlap)
    ]
    Assignment.objects.bulk_create(rows, batch_size=ENTRY_BATCH, ignore_conflicts=True)


def selection_add(*, project: CurationProject, item_ids: list[int]) -> list[int]:
    """Put selected items (a lasso in the overview) into the queue: items not yet queued get
    new entries after the last rank; returns the entry ids of all selected items.

    Raises:
        LabelingError: an item that is not in the project's training run.
    """
    from .quality import find_label_issues

    ctx = run_context(project.run)
    wanted = [int(i) for i in dict.fromkeys(item_ids)]
    missing = [i for i in wanted if i not in ctx.row_of]
    if missing:
        raise LabelingError(f"items {missing[:5]} are not in training run {project.run_id}")
    have = dict(
        QueueEntry.objects.filter(project=project, item_id__in=wanted).values_list("item_id", "pk")
    )
    new_ids = [i for i in wanted if i not in have]
    if new_ids:
        issues = find_label_issues(
            ctx.labels, ctx.pred_probs, rank_by=project.score, method=project.method
        )
        rows = np.array([ctx.row_of[i] for i in new_ids], dtype=np.int64)
        predicted = ctx.pred_probs.argmax(1)
        unit = ctx.unit
        given_nn = _neighbours(ctx, unit, rows, ctx.labels[rows])
        other_nn = _neighbours(ctx, unit, rows, predicted[rows])
        with transaction.atomic():
            start = (
                QueueEntry.objects.filter(project=project).aggregate(m=Max("rank"))["m"] or 0
            ) + 1
            order = np.argsort(issues.score[rows], kind="stable")
            entries = []
            for k, j in enumerate(order):
                row = int(rows[j])
                probs = ctx.pred_probs[row]
                top = np.argsort(-probs, kind="stable")[:3]
                entries.append(
                    QueueEntry(
                        project=project,
                        item_id=int(ctx.item_ids[row]),
                        rank=start + k,
                        score=float(issues.score[row]),
                        given_label=int(ctx.labels[row]),
                        suggested_label=int(issues.suggested[row]),
                        predicted_label=int(predicted[row]),
                        flagged=bool(issues.mask[row]),
                        issue_type="selected",
                        top3=[
                            {"index": int(t), "probability": round(float(probs[t]), 4)} for t in top
                        ],
                        neighbours={"given": given_nn[j], "other": other_nn[j]},
                    )
                )
            created = QueueEntry.objects.bulk_create(entries)
            _assign(project, created, sorted(project.curators.all(), key=lambda u: u.pk))
            summary = dict(project.summary or {})
            summary["entries"] = summary.get("entries", 0) + len(created)
            summary["selected"] = summary.get("selected", 0) + len(created)
            CurationProject.objects.filter(pk=project.pk).update(summary=summary)
        have.update({e.item_id: e.pk for e in created})
    return [have[i] for i in wanted]


# --------------------------------------------------------------------------------------------
# The queue


@dataclass(frozen=True)
class QueueFilter:
    """Which entries a curator works through.

    ``cell``: (given, predicted) of the confusion matrix; ``pair``: both directions of a
    class pair (given/suggested); ``given``: entries of one given class; ``entries``: an
    explicit set (a lasso selection); ``status``: "pending" (default), "unsure" or "all".
    """

    cell: tuple[int, int] | None = None
    pair: tuple[int, int] | None = None
    given: int | None = None
    entries: tuple[int, ...] | None = None
    status: str = "pending"

    @classmethod
    def from_query(cls, query, entries: tuple[int, ...] | None = None) -> QueueFilter:
        """Parse ``cell=i,j``, ``pair=i,j``, ``given=i``, ``status=`` (bad values ignored)."""

        def two(value):
            try:
                a, b = (int(v) for v in str(value).split(","))
                return (a, b)
            except (TypeError, ValueError):
                return None

        given = query.get("given")
        status = query.get("status", "pending")
        return cls(
            cell=two(query.get("cell")) if query.get("cell") else None,
            pair=two(query.get("pair")) if query.get("pair") else None,
            given=int(given)
            if given not in (None, "") and str(given).lstrip("-").isdigit()
            else None,
            entries=entries,
            status=status if status in ("pending", "unsure", "all") else "pending",
        )

    def query_string(self) -> str:
        parts = []
        if self.cell:
            parts.append(f"cell={self.cell[0]},{self.cell[1]}")
        if self.pair:
            parts.append(f"pair={self.pair[0]},{self.pair[1]}")
        if self.given is not None:
            parts.append(f"given={self.given}")
        if self.status != "pending":
            parts.append(f"status={self.status}")
        return "&".join(parts)


def assignments_for(project: CurationProject, curator, flt: QueueFilter):
    """The curator's assignments in queue order, filtered."""
    qs = Assignment.objects.filter(entry__project=project, curator=curator)
    if flt.cell:
        qs = qs.filter(entry__given_label=flt.cell[0], entry__predicted_label=flt.cell[1])
    if flt.pair:
        a, b = flt.pair
        qs = qs.filter(
            Q(entry__given_label=a, entry__suggested_label=b)
            | Q(entry__given_label=b, entry__suggested_label=a)
        )
    if flt.given is not None:
        qs = qs.filter(entry__given_label=flt.given)
    if flt.entries is not None:
        qs = qs.filter(entry_id__in=flt.entries)
    if flt.status == "pending":
        qs = qs.filter(decision__isnull=True)
    elif flt.status == "unsure":
        qs = qs.filter(decision__action=Action.UNSURE)
    return qs.order_by("rank")


def queue_next(
    project: CurationProject, curator, flt: QueueFilter, *, after_rank: int | None = None
) -> Assignment | None:
    """The next assignment after ``after_rank`` (wrapping to the start), or None when the
    filtered queue is empty."""
    qs = assignments_for(project, curator, flt).select_related("entry", "entry__item", "decision")
    if after_rank is not None:
        nxt = qs.filter(rank__gt=after_rank).first()
        if nxt is not None:
            return nxt
    return qs.first()


def queue_counts(project: CurationProject, curator, flt: QueueFilter) -> dict[str, int]:
    """Assigned, decided and pending counts of the curator under ``flt`` (status ignored)."""
    base = assignments_for(project, curator, QueueFilter(**{**flt.__dict__, "status": "all"}))
    total = base.count()
    pending = base.filter(decision__isnull=True).count()
    return {"total": total, "decided": total - pending, "pending": pending}


# --------------------------------------------------------------------------------------------
# Decisions


class DecisionConflict(LabelingError):
    """The entry changed since the curator's page was drawn (a duplicate or stale submit)."""


def decision_record(
    *,
    project: CurationProject,
    entry: QueueEntry,
    curator,
    action: str,
    to_label: int | None = None,
    expected: int | None = None,
    shown: dict | None = None,
    duration_ms: int | None = None,
) -> tuple[Decision, bool]:
    """Log one decision and make it the curator's standing decision on the entry.

    ``expected`` is the standing decision id the curator's page showed (None = none): a submit
    made from a stale page (a double click, a second tab) is refused with
    :class:`DecisionConflict` and logs nothing; the same decision sent twice is logged once.
    Returns ``(decision, created)``.

    Raises:
        LabelingError: an unknown action, a missing or out-of-range label, an entry of another
            project, or a curator the entry is not assigned to.
        DecisionConflict: see above.
    """
    if action not in (Action.RELABEL, Action.KEEP, Action.REMOVE, Action.UNSURE):
        raise LabelingError(f"action must be relabel, keep, remove or unsure, not {action!r}")
    if entry.project_id != project.pk:
        raise LabelingError("this entry belongs to another project")
    k = len(project.dataset.class_names or [])
    if action == Action.RELABEL:
        if to_label is None:
            raise LabelingError("relabel needs a label")
        to_label = int(to_label)
        if not 0 <= to_label < k:
            raise LabelingError(f"label {to_label} is outside 0..{k - 1}")
        if to_label == entry.given_label:
            action = Action.KEEP
    if action == Action.KEEP:
        to_label = entry.given_label
    elif action in (Action.REMOVE, Action.UNSURE):
        to_label = None
    with transaction.atomic():
        try:
            assignment = Assignment.objects.select_for_update().get(entry=entry, curator=curator)
        except Assignment.DoesNotExist:
            raise LabelingError("this entry is not assigned to you") from None
        standing = assignment.decision
        if standing is not None and standing.action == action and standing.to_label == to_label:
            return standing, False
        if (standing.pk if standing else None) != expected:
            raise DecisionConflict(
                "this item was already decided on another page; reload to see the decision"
            )
        decision = Decision.objects.create(
            project=project,
            entry=entry,
            curator=curator,
            action=action,
            from_label=entry.given_label,
            to_label=to_label,
            shown=shown or {},
            duration_ms=duration_ms,
        )
        assignment.decision = decision
        assignment.save(update_fields=["decision"])
    return decision, True


def decision_undo(*, project: CurationProject, curator) -> Decision | None:
    """Withdraw the curator's most recent standing decision in the project (logged as an
    ``undo`` row); the entry returns to its previous decision or to pending. Returns the undo
    row, or None when there is nothing to undo."""
    with transaction.atomic():
        last = (
            Assignment.objects.select_for_update(of=("self",))
            .filter(entry__project=project, curator=curator, decision__isnull=False)
            .select_related("decision")
            .order_by("-decision_id")
            .first()
        )
        if last is None:
            return None
        withdrawn = last.decision
        undo = Decision.objects.create(
            project=project,
            entry=withdrawn.entry,
            curator=curator,
            action=Action.UNDO,
            from_label=withdrawn.from_label,
            to_label=withdrawn.to_label,
            undoes=withdrawn,
        )
        undone_ids = set(
            Decision.objects.filter(
                entry=withdrawn.entry, curator=curator, action=Action.UNDO
            ).values_list("undoes_id", flat=True)
        )
        previous = (
            Decision.objects.filter(entry=withdrawn.entry, curator=curator, pk__lt=withdrawn.pk)
            .exclude(action=Action.UNDO)
            .exclude(pk__in=undone_ids)
            .order_by("-pk")
            .first()
        )
        last.decision = previous
        last.save(update_fields=["decision"])
    return undo


def bulk_decide(
    *, project: CurationProject, curator, entry_ids: list[int], action: str, to_label=None
) -> int:
    """Apply one decision to several entries (bulk review of a class pair); entries already
    decided the same way are skipped. Returns the number of decisions logged.

    Raises:
        LabelingError: as :func:`decision_record`, checked for every entry before any is
            logged (all or nothing).
    """
    entries = list(QueueEntry.objects.filter(project=project, pk__in=entry_ids))
    if len(entries) != len(set(entry_ids)):
        raise LabelingError("some entries are not in this project")
    logged = 0
    with transaction.atomic():
        for entry in entries:
            current = (
                Assignment.objects.filter(entry=entry, curator=curator)
                .values_list("decision_id", flat=True)
                .first()
            )
            _, created = decision_record(
                project=project,
                entry=entry,
                curator=curator,
                action=action,
                to_label=to_label,
                expected=current,
                shown={"view": "pair", "count": len(entries)},
            )
            logged += created
    return logged


# --------------------------------------------------------------------------------------------
# Consensus, agreement, export


def standing_decisions(project: CurationProject) -> dict[int, dict[int, Decision]]:
    """``{entry id: {curator id: standing decision}}`` (unsure included)."""
    out: dict[int, dict[int, Decision]] = defaultdict(dict)
    for a in (
        Assignment.objects.filter(entry__project=project, decision__isnull=False)
        .select_related("decision")
        .order_by("rank")
    ):
        out[a.entry_id][a.curator_id] = a.decision
    return out


def _vote(decision: Decision):
    if decision.action == Action.REMOVE:
        return REMOVED
    if decision.action in (Action.KEEP, Action.RELABEL):
        return int(decision.to_label)
    return None  # unsure


@dataclass
class Consensus:
    """One entry's outcome: ``label`` (int, :data:`REMOVED`, or None = no consensus),
    ``votes`` {curator id: vote}, ``status`` "agreed", "partial" (not every assigned curator
    has decided), "disputed", "unsure" or "pending"."""

    entry: QueueEntry
    label: int | str | None
    votes: dict
    status: str


def project_consensus(project: CurationProject) -> list[Consensus]:
    """Majority of the curators' standing votes per entry (unsure votes do not count).

    An entry counts as "agreed" only when every curator it is assigned to has decided (with
    overlap 2, one vote is "partial" and changes nothing yet); a tie between the top votes is
    "disputed" and changes nothing.
    """
    standing = standing_decisions(project)
    assigned = Counter(
        Assignment.objects.filter(entry__project=project).values_list("entry_id", flat=True)
    )
    out = []
    for entry in QueueEntry.objects.filter(project=project).select_related("item").order_by("rank"):
        votes = {c: _vote(d) for c, d in standing.get(entry.pk, {}).items()}
        counted = Counter(v for v in votes.values() if v is not None)
        if not votes:
            out.append(Consensus(entry, None, votes, "pending"))
            continue
        if len(votes) < assigned[entry.pk]:
            out.append(Consensus(entry, None, votes, "partial"))
            continue
        if not counted:
            out.append(Consensus(entry, None, votes, "unsure"))
            continue
        (top, n), *rest = counted.most_common()
        if rest and rest[0][1] == n:
            out.append(Consensus(entry, None, votes, "disputed"))
        else:
            out.append(Consensus(entry, top, votes, "agreed"))
    return out


def project_agreement(project: CurationProject):
    """Krippendorff's alpha (nominal) of the curators' standing votes, unsure left out
    (:func:`analysis.stats.agreement.krippendorff_alpha`); "remove" is one more category."""
    import pandas as pd

    from analysis.stats.agreement import AgreementResult, krippendorff_alpha

    rows = []
    for entry_id, by_curator in standing_decisions(project).items():
        for curator_id, decision in by_curator.items():
            vote = _vote(decision)
            if vote is not None:
                rows.append({"rater": curator_id, "unit": entry_id, "value": str(vote)})
    if not rows:
        return AgreementResult(
            statistic="krippendorff_alpha",
            value=None,
            n_units=0,
            n_raters=0,
            n_pairable=0,
            defined=False,
            reason="no counted votes yet",
            level="nominal",
        )
    frame = pd.DataFrame(rows, columns=["rater", "unit", "value"])
    return krippendorff_alpha(frame, "nominal")


EXPORT_COLUMNS = [
    "item_id",
    "item_name",
    "sha256",
    "given_label",
    "given_label_name",
    "new_label",
    "new_label_name",
    "outcome",
    "votes",
    "curators",
    "rank",
    "score",
    "issue_type",
]


def export_rows(project: CurationProject, *, votes_as_text: bool = True) -> list[dict]:
    """One row per queue entry with any vote (see :data:`EXPORT_COLUMNS`): ``votes`` maps
    curator usernames to their vote (a class index or "remove"; unsure = null), as JSON text
    for CSV; ``rank`` is 1-based as the queue shows it."""
    from django.contrib.auth import get_user_model

    names = project.dataset.class_names or []
    usernames = dict(
        get_user_model()
        .objects.filter(pk__in=Assignment.objects.filter(entry__project=project).values("curator"))
        .values_list("pk", "username")
    )
    rows = []
    for c in project_consensus(project):
        if c.status == "pending":
            continue
        e = c.entry
        votes = {usernames.get(k, str(k)): v for k, v in sorted(c.votes.items())}
        new = c.label if c.status == "agreed" else e.given_label
        outcome = (
            "removed"
            if new == REMOVED
            else "relabelled"
            if new != e.given_label
            else "kept"
            if c.status == "agreed"
            else c.status
        )
        rows.append(
            {
                "item_id": e.item_id,
                "item_name": e.item.name,
                "sha256": e.item.sha256,
                "given_label": e.given_label,
                "given_label_name": names[e.given_label] if e.given_label < len(names) else "",
                "new_label": "" if new == REMOVED else new,
                "new_label_name": "" if new == REMOVED else names[new] if new < len(names) else "",
                "outcome": outcome,
                "votes": json.dumps(votes) if votes_as_text else votes,
                "curators": len(c.votes),
                "rank": e.rank + 1,
                "score": round(e.score, 6),
                "issue_type": e.issue_type,
            }
        )
    return rows


def export_provenance(project: CurationProject) -> dict:
    run = project.run
    agreement = project_agreement(project)
    return {
        "project": project.pk,
        "project_name": project.name,
        "dataset": project.dataset.name,
        "base_label_version": project.label_version.number,
        "training_run": run.pk,
        "model_weights_sha256": run.weights_sha256,
        "score": project.score,
        "method": project.method,
        "overlap": project.overlap,
        "decisions_logged": project.decisions.count(),
        "krippendorff_alpha": None if agreement.value is None else round(agreement.value, 4),
        "exported_at": timezone.now().isoformat(),
        "class_names": project.dataset.class_names,
    }


def export_csv(project: CurationProject) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(export_rows(project))
    return buf.getvalue()


def export_json(project: CurationProject) -> str:
    return json.dumps(
        {
            "provenance": export_provenance(project),
            "labels": export_rows(project, votes_as_text=False),
        },
        indent=1,
    )


def _changes_from_rows(rows: list[dict], version: LabelVersion) -> dict[int, int | None]:
    """Validate exported rows against ``version`` and return {item id: new label or None}."""
    names = version.dataset.class_names or []
    labels = version_labels(version)
    changes: dict[int, int | None] = {}
    for n, row in enumerate(rows, start=2):
        try:
            item_id = int(row["item_id"])
        except (KeyError, TypeError, ValueError):
            raise LabelingError(f"row {n}: item_id missing or not a number") from None
        if item_id not in labels:
            raise LabelingError(f"row {n}: item {item_id} is not in {version}")
        outcome = str(row.get("outcome", "")).strip()
        raw = row.get("new_label", "")
        if outcome == "removed":
            changes[item_id] = None
            continue
        if raw in ("", None):
            continue
        try:
            label = int(raw)
        except (TypeError, ValueError):
            if str(raw) in names:
                label = names.index(str(raw))
            else:
                raise LabelingError(f"row {n}: new_label {raw!r} is not a class") from None
        if names and not 0 <= label < len(names):
            raise LabelingError(f"row {n}: new_label {label} is outside 0..{len(names) - 1}")
        changes[item_id] = label
    return changes


def label_version_from_project(
    *, project: CurationProject, user=None, note: str = ""
) -> LabelVersion:
    """A new label version of the dataset from the project's consensus (agreed relabels and
    removals; kept, disputed and unsure entries keep their label). The base stays.

    Raises:
        LabelingError: the project already produced a version.
    """
    if project.result_version_id:
        raise LabelingError(f"this project already produced {project.result_version}")
    changes = _changes_from_rows(export_rows(project), project.label_version)
    version = label_version_create(
        parent=project.label_version,
        changes=changes,
        source="curation",
        note=note or f"Corrections of curation project “{project.name}”.",
        provenance=export_provenance(project),
        user=user,
    )
    project.result_version = version
    project.save(update_fields=["result_version"])
    return version


def label_version_import(
    *, version: LabelVersion, data: bytes, filename: str, user=None
) -> LabelVersion:
    """Re-import exported corrections (CSV or JSON as :func:`export_csv` / :func:`export_json`
    write them) as a new version on top of ``version``. All rows are checked first; a bad row
    creates nothing.

    Raises:
        LabelingError: unreadable file, a missing column, an unknown item or class.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabelingError("the file is not UTF-8 text") from None
    provenance: dict = {"file": filename}
    if filename.lower().endswith(".json"):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelingError(f"not valid JSON: {exc}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("labels"), list):
            raise LabelingError("JSON must be an object with a 'labels' list")
        rows = payload["labels"]
        provenance["source"] = payload.get("provenance", {})
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "item_id" not in reader.fieldnames:
            raise LabelingError("CSV needs a header with at least item_id and new_label")
        rows = list(reader)
    if not rows:
        raise LabelingError("the file has no rows")
    changes = _changes_from_rows(rows, version)
    try:
        return label_version_create(
            parent=version,
            changes=changes,
            source="upload",
            note=f"Imported from {filename}.",
            provenance=provenance,
            user=user,
        )
    except IntegrityError as exc:  # a concurrent version took the number
        raise LabelingError(f"could not store the version ({exc}); try again") from None


def curator_throughput(project: CurationProject, curator=None) -> dict:
    """Decisions per minute from the log: decisions (undo excluded) over the span between
    the first and the last, per curator:
    ``{curator id: {"decisions", "minutes", "per_minute"}}``."""
    qs = project.decisions.exclude(action=Action.UNDO)
    if curator is not None:
        qs = qs.filter(curator=curator)
    out = {}
    by: dict[int, list] = defaultdict(list)
    for cid, at in qs.values_list("curator_id", "created_at"):
        by[cid].append(at)
    for cid, times in by.items():
        span = (max(times) - min(times)).total_seconds() / 60
        out[cid] = {
            "decisions": len(times),
            "minutes": round(span, 3),
            "per_minute": round((len(times) - 1) / span, 2) if span > 0 else None,
        }
    return out


def item_label_in(version: LabelVersion, item_id: int) -> int | None:
    row = ItemLabel.objects.filter(version=version, item_id=item_id).first()
    return row.label_index if row else None
