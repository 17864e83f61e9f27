"""Researcher REST API of the explanations app: models, datasets, items, imports, predictions
and explanation jobs (wired under ``/api/`` by ``studyplatform/api.py``).

Who sees what: a model or dataset with no owner is shared (the bundled demo) and visible to
every logged-in user; an owned one only to its owner; a superuser sees everything. A job or an
import is visible to whoever sees its dataset. Anything a user may not see is 404, never 403,
so its existence is not revealed. Adding images to a dataset (uploads, imports) is for its
owner or a superuser, and, for shared datasets, for staff (as the upload endpoint always
allowed); everyone else who can see the dataset gets 403.
"""

from __future__ import annotations

import json
import tempfile
import uuid
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Count, Q, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import (
    ClassifierModel,
    Dataset,
    DatasetImportJob,
    ExplanationJob,
    Item,
    ModelKind,
    Prediction,
    Region,
    ResizePolicy,
)
from .services import (
    DatasetNameTaken,
    ImageSource,
    ModelInUse,
    ModelRegistrationError,
    dataset_create,
    dataset_import,
    dataset_import_job_create,
    explanation_job_create,
    model_delete,
    model_register,
)
from .uploads import upload_write

# --- permission-checking fetch helpers ------------------------------------------------------


def visible_to(queryset: QuerySet, user) -> QuerySet:
    """Rows of an owned model (``ClassifierModel``, ``Dataset``) that ``user`` may see:
    shared (no owner) and their own; every row for a superuser."""
    if user.is_superuser:
        return queryset
    return queryset.filter(Q(owner__isnull=True) | Q(owner_id=user.pk))


def model_get_for_user(user, pk) -> ClassifierModel:
    """The model if ``user`` may see it; Http404 otherwise."""
    return get_object_or_404(
        visible_to(ClassifierModel.objects.select_related("owner"), user), pk=pk
    )


def dataset_get_for_user(user, pk) -> Dataset:
    """The dataset (with ``item_count``) if ``user`` may see it; Http404 otherwise."""
    return get_object_or_404(_datasets_for(user), pk=pk)


def job_get_for_user(user, pk) -> ExplanationJob:
    """The explanation job if ``user`` may see its dataset; Http404 otherwise."""
    jobs = ExplanationJob.objects.filter(dataset__in=visible_to(Dataset.objects.all(), user))
    return get_object_or_404(jobs, pk=pk)


def import_job_get_for_user(user, pk) -> DatasetImportJob:
    """The dataset import if ``user`` may see its dataset; Http404 otherwise."""
    imports = DatasetImportJob.objects.filter(dataset__in=visible_to(Dataset.objects.all(), user))
    return get_object_or_404(imports, pk=pk)


def dataset_check_can_add_items(user, dataset: Dataset) -> None:
    """Raise PermissionDenied unless ``user`` may add images to ``dataset`` (owner,
    superuser, or staff for a shared dataset)."""
    if user.is_superuser or dataset.owner_id == user.pk:
        return
    if dataset.owner_id is None and user.is_staff:
        return
    raise PermissionDenied("only the dataset's owner may add images to it")


def _datasets_for(user) -> QuerySet:
    datasets = Dataset.objects.select_related("owner").annotate(item_count=Count("items"))
    return visible_to(datasets, user).order_by("id")


def _pk_param(request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise serializers.ValidationError({name: ["A valid integer is required."]}) from None


# --- serializers ----------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """Every error body: ``detail`` says what went wrong; validation errors also carry one
    list of messages per offending field."""

    detail = serializers.CharField()


class OwnerField(serializers.SlugRelatedField):
    """The owner's username; null for shared objects."""

    def __init__(self, **kwargs):
        super().__init__(slug_field="username", read_only=True, allow_null=True, **kwargs)


class ClassifierModelSerializer(serializers.ModelSerializer):
    class_names = serializers.ListField(child=serializers.CharField(), read_only=True)
    num_classes = serializers.IntegerField(read_only=True)
    normalization_mean = serializers.ListField(child=serializers.FloatField(), read_only=True)
    normalization_std = serializers.ListField(child=serializers.FloatField(), read_only=True)
    owner = OwnerField()

    class Meta:
        model = ClassifierModel
        fields = [
            "id",
            "name",
            "kind",
            "architecture",
            "class_names",
            "num_classes",
            "input_size",
            "resize_policy",
            "normalization_mean",
            "normalization_std",
            "target_layer",
            "weights_sha256",
            "owner",
            "created_at",
        ]


class FormListField(serializers.ListField):
    """A list sent as repeated form fields or as one JSON list (``["a", "b"]``)."""

    def to_internal_value(self, data):
        if isinstance(data, list | tuple) and len(data) == 1 and isinstance(data[0], str):
            data = data[0]
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError:
                raise serializers.ValidationError(
                    "expected a JSON list (or the field repeated once per value)"
                ) from None
        return super().to_internal_value(data)


class ModelRegisterSerializer(serializers.Serializer):
    """Multipart form of ``POST /api/models/``; checked again by ``model_register``."""

    name = serializers.CharField(max_length=200)
    weights = serializers.FileField(
        help_text="State dict (.safetensors or torch.save of tensors) or TorchScript archive."
    )
    kind = serializers.ChoiceField(choices=ModelKind.choices, default=ModelKind.BUILTIN)
    architecture = serializers.CharField(
        max_length=300,
        required=False,
        allow_blank=True,
        default="",
        help_text="Built-in key, or factory dotted path 'package.module:function'.",
    )
    class_names = FormListField(
        child=serializers.CharField(),
        required=False,
        help_text="One name per logit: a JSON list or repeated fields (or send classes_file).",
    )
    classes_file = serializers.FileField(
        required=False, help_text="Class names: .txt, one per line, or a .json list."
    )
    input_size = serializers.IntegerField(default=224, min_value=8, max_value=2048)
    resize_policy = serializers.ChoiceField(
        choices=ResizePolicy.choices, default=ResizePolicy.CENTER_CROP
    )
    normalization = serializers.CharField(
        required=False, help_text="Preset name ('imagenet', 'efficientnet-lite'); default imagenet."
    )
    normalization_mean = FormListField(
        child=serializers.FloatField(), min_length=3, max_length=3, required=False
    )
    normalization_std = FormListField(
        child=serializers.FloatField(), min_length=3, max_length=3, required=False
    )
    target_layer = serializers.CharField(max_length=200, required=False, allow_blank=True)

    def validate(self, attrs):
        if ("class_names" in attrs) == ("classes_file" in attrs):
            raise serializers.ValidationError("send exactly one of class_names and classes_file")
        custom = "normalization_mean" in attrs or "normalization_std" in attrs
        if custom and "normalization" in attrs:
            raise serializers.ValidationError(
                "send either a normalization preset or normalization_mean/normalization_std"
            )
        if custom:
            attrs["normalization"] = {
                "mean": attrs.pop("normalization_mean", []),
                "std": attrs.pop("normalization_std", []),
            }
        attrs.setdefault("normalization", "imagenet")
        return attrs


class DatasetSerializer(serializers.ModelSerializer):
    class_names = serializers.ListField(child=serializers.CharField(), read_only=True)
    item_count = serializers.IntegerField(read_only=True)
    owner = OwnerField()

    class Meta:
        model = Dataset
        fields = ["id", "name", "description", "class_names", "item_count", "owner", "created_at"]


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = [
            "id",
            "name",
            "sha256",
            "width",
            "height",
            "original_mode",
            "label_index",
            "label_name",
            "source",
        ]


class RegionSerializer(serializers.ModelSerializer):
    has_mask = serializers.SerializerMethodField()

    class Meta:
        model = Region
        fields = ["id", "kind", "label", "x0", "y0", "x1", "y1", "has_mask"]

    def get_has_mask(self, region: Region) -> bool:
        return bool(region.mask)


class ItemDetailSerializer(ItemSerializer):
    regions = RegionSerializer(many=True, read_only=True)

    class Meta(ItemSerializer.Meta):
        fields = [
            *ItemSerializer.Meta.fields,
            "dataset",
            "original_name",
            "split",
            "created_at",
            "regions",
        ]


class ItemUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    name = serializers.CharField(max_length=200, required=False)
    label_index = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    label_name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class DatasetImportJobSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetImportJob
        fields = [
            "id",
            "dataset",
            "source_format",
            "status",
            "total_files",
            "processed_files",
            "report",
            "error",
            "created_at",
            "finished_at",
        ]


class DatasetImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A zip archive: ImageFolder layout (class/image.png) or a manifest inside."
    )


class TopKEntrySerializer(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    probability = serializers.FloatField()


class PredictionSerializer(serializers.ModelSerializer):
    item_name = serializers.CharField(source="item.name", read_only=True)
    dataset = serializers.IntegerField(source="item.dataset_id", read_only=True)
    predicted_name = serializers.SerializerMethodField()
    topk = TopKEntrySerializer(many=True, read_only=True)
    true_index = serializers.SerializerMethodField()
    is_correct = serializers.BooleanField(read_only=True, allow_null=True)

    class Meta:
        model = Prediction
        fields = [
            "item",
            "item_name",
            "dataset",
            "predicted_index",
            "predicted_name",
            "probability",
            "topk",
            "true_index",
            "is_correct",
        ]

    def get_predicted_name(self, prediction: Prediction) -> str:
        return prediction.model.class_name(prediction.predicted_index)

    def get_true_index(self, prediction: Prediction) -> int | None:
        return prediction.item.label_for(prediction.model)


class ExplanationJobSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True)

    class Meta:
        model = ExplanationJob
        fields = [
            "id",
            "model",
            "dataset",
            "method",
            "top_k",
            "status",
            "total_items",
            "done_items",
            "failed_items",
            "progress",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class VisibleRelatedField(serializers.PrimaryKeyRelatedField):
    """A primary key among the rows the requesting user may see (others read as unknown)."""

    def get_queryset(self):
        return visible_to(super().get_queryset(), self.context["request"].user)


class ExplanationJobCreateSerializer(serializers.Serializer):
    model = VisibleRelatedField(queryset=ClassifierModel.objects.all())
    dataset = VisibleRelatedField(queryset=Dataset.objects.all())
    method = serializers.CharField(max_length=50, default="gradcam")
    top_k = serializers.IntegerField(default=4, min_value=1)


_ERROR_400 = OpenApiResponse(ErrorSerializer, description="Invalid input; detail names it.")
_ERROR_404 = OpenApiResponse(ErrorSerializer, description="Unknown, or not visible to you.")

# --- models ---------------------------------------------------------------------------------


class ClassifierModelListRegisterApi(ListAPIView):
    """``GET /api/models/``: the models you can see (paginated).

    ``POST /api/models/`` (multipart): register a classifier. Fields: ``name``, ``weights``
    (file), ``kind`` (builtin | factory | torchscript), ``architecture``, ``class_names`` (a
    JSON list or repeated fields) or ``classes_file`` (.txt / .json), ``input_size``,
    ``resize_policy``, ``normalization`` (preset) or ``normalization_mean`` and
    ``normalization_std``, ``target_layer``. The weights are validated end to end by
    ``model_register`` (safe loading, strict state-dict match, a forward pass) before anything
    is stored. 201 with the model, owned by you; 400 ``{"detail": ...}`` naming the problem,
    with nothing saved.
    """

    serializer_class = ClassifierModelSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return visible_to(
            ClassifierModel.objects.select_related("owner"), self.request.user
        ).order_by("id")

    @extend_schema(
        request=ModelRegisterSerializer,
        responses={201: ClassifierModelSerializer, 400: _ERROR_400},
    )
    def post(self, request):
        data = ModelRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        weights, classes_file = fields.pop("weights"), fields.pop("classes_file", None)
        with tempfile.TemporaryDirectory(prefix="model-upload-") as tmp:
            try:
                model = model_register(
                    name=fields["name"],
                    weights_path=upload_write(weights, Path(tmp) / "weights", "weights.bin"),
                    class_names=(
                        upload_write(classes_file, Path(tmp) / "classes", "classes.txt")
                        if classes_file is not None
                        else fields["class_names"]
                    ),
                    kind=fields["kind"],
                    architecture=fields["architecture"],
                    input_size=fields["input_size"],
                    resize_policy=fields["resize_policy"],
                    normalization=fields["normalization"],
                    target_layer=fields.get("target_layer") or None,
                    owner=request.user,
                )
            except ModelRegistrationError as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(ClassifierModelSerializer(model).data, status=status.HTTP_201_CREATED)


@extend_schema(responses={200: ClassifierModelSerializer, 404: _ERROR_404})
class ClassifierModelDetailApi(RetrieveAPIView):
    """``GET /api/models/<id>/``: one model; 404 when you cannot see it.
    ``DELETE``: owner or superuser only (403 otherwise); 409 when a study uses the model;
    204 after its predictions, explanations and stored weights are removed."""

    serializer_class = ClassifierModelSerializer

    def get_object(self):
        return model_get_for_user(self.request.user, self.kwargs["pk"])

    @extend_schema(
        responses={204: None, 403: ErrorSerializer, 404: _ERROR_404, 409: ErrorSerializer}
    )
    def delete(self, request, pk: int):
        model = self.get_object()
        if not (request.user.is_superuser or model.owner_id == request.user.pk):
            raise PermissionDenied("only the model's owner may delete it")
        try:
            model_delete(model=model)
        except ModelInUse as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(
    parameters=[
        OpenApiParameter("dataset", int, description="Only items of this dataset (visible).")
    ],
    responses={200: PredictionSerializer(many=True), 404: _ERROR_404},
)
class PredictionListApi(ListAPIView):
    """``GET /api/models/<id>/predictions/?dataset=<id>``: the model's top-k per item
    (paginated, in item order), over the datasets you can see, with each item's true class
    (index in the model's classes, or null) and whether the model was right. 404 for a model
    or dataset you cannot see."""

    serializer_class = PredictionSerializer

    def get_queryset(self):
        user = self.request.user
        model = model_get_for_user(user, self.kwargs["pk"])
        predictions = Prediction.objects.filter(
            model=model, item__dataset__in=visible_to(Dataset.objects.all(), user)
        )
        dataset_id = _pk_param(self.request, "dataset")
        if dataset_id is not None:
            predictions = predictions.filter(item__dataset=dataset_get_for_user(user, dataset_id))
        return predictions.select_related("model", "item", "item__dataset").order_by("item_id")


# --- datasets, items and imports ------------------------------------------------------------


class DatasetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    class_names = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list
    )


class DatasetListApi(ListAPIView):
    """``GET /api/datasets/``: the datasets you can see, with ``item_count`` and
    ``class_names`` (paginated). ``POST`` {name, description, class_names}: a new empty
    dataset owned by you (201); 400 for a blank or repeated class name; 409 for a taken name."""

    serializer_class = DatasetSerializer

    def get_queryset(self):
        return _datasets_for(self.request.user)

    @extend_schema(
        request=DatasetCreateSerializer,
        responses={201: DatasetSerializer, 400: ErrorSerializer, 409: ErrorSerializer},
    )
    def post(self, request):
        data = DatasetCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            dataset = dataset_create(owner=request.user, **data.validated_data)
        except DatasetNameTaken as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            DatasetSerializer(dataset_get_for_user(request.user, dataset.pk)).data,
            status=status.HTTP_201_CREATED,
        )


@extend_schema(responses={200: DatasetSerializer, 404: _ERROR_404})
class DatasetDetailApi(RetrieveAPIView):
    """``GET /api/datasets/<id>/``: one dataset; 404 when you cannot see it."""

    serializer_class = DatasetSerializer

    def get_object(self):
        return dataset_get_for_user(self.request.user, self.kwargs["pk"])


class DatasetItemUploadApi(ListAPIView):
    """``GET /api/datasets/<id>/items/``: the dataset's items (paginated).

    ``POST /api/datasets/<id>/items/``: add one image (multipart ``file``, optional ``name``,
    ``label_index``, ``label_name``).

    201 with the stored item; 400 with ``detail`` naming the problem for an undecodable,
    truncated, empty or oversized image (decompression bombs are refused from the header,
    before decoding); 409 when the name or the content is already in the dataset; 413 when
    the upload exceeds ``STUDYPLATFORM_MAX_UPLOAD_BYTES``. The format is detected from the
    content, not the file name. 404 for a dataset you cannot see, 403 for one you may not add
    images to.
    """

    serializer_class = ItemSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return dataset_get_for_user(self.request.user, self.kwargs["pk"]).items.order_by("id")

    @extend_schema(
        request=ItemUploadSerializer,
        responses={
            201: ItemSerializer,
            400: _ERROR_400,
            403: ErrorSerializer,
            404: _ERROR_404,
            409: OpenApiResponse(ErrorSerializer, description="Name or content already there."),
            413: OpenApiResponse(ErrorSerializer, description="Upload over the byte limit."),
        },
    )
    def post(self, request, pk: int):
        dataset = dataset_get_for_user(request.user, pk)
        dataset_check_can_add_items(request.user, dataset)
        data = ItemUploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > settings.STUDYPLATFORM_MAX_UPLOAD_BYTES:
            return Response(
                {
                    "detail": f"{upload.name}: {upload.size} bytes exceeds the limit of "
                    f"{settings.STUDYPLATFORM_MAX_UPLOAD_BYTES}"
                },
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        name = data.validated_data.get("name") or upload.name
        label = data.validated_data.get("label_index")
        report = dataset_import(
            dataset=dataset,
            sources=[
                ImageSource(
                    name=name,
                    data=upload.read(),
                    label_index=label,
                    label_name=data.validated_data.get("label_name", ""),
                    source=f"upload by {request.user.username}",
                )
            ],
        )
        if report.failed:
            return Response({"detail": report.failed[0][1]}, status=status.HTTP_400_BAD_REQUEST)
        if report.duplicates:
            return Response(
                {"detail": f"{name}: already in the dataset (same name or content)"},
                status=status.HTTP_409_CONFLICT,
            )
        item = dataset.items.get(name=name)
        return Response(ItemSerializer(item).data, status=status.HTTP_201_CREATED)


@extend_schema(responses={200: ItemDetailSerializer, 404: _ERROR_404})
class DatasetItemDetailApi(RetrieveAPIView):
    """``GET /api/datasets/<id>/items/<item_id>/``: one item with its split, original file
    name and ground-truth regions (boxes in pixels of the stored image)."""

    serializer_class = ItemDetailSerializer

    def get_object(self):
        dataset = dataset_get_for_user(self.request.user, self.kwargs["pk"])
        return get_object_or_404(
            dataset.items.prefetch_related("regions"), pk=self.kwargs["item_id"]
        )


class DatasetImportCreateApi(APIView):
    """``POST /api/datasets/<id>/imports/`` (multipart ``file``: a zip archive): store the
    archive under ``MEDIA_ROOT/uploads/`` and queue a background import.

    202 with the import (poll ``GET /api/imports/<id>/``); 400 when the file is not a zip
    archive; 413 above ``STUDYPLATFORM_MAX_ZIP_BYTES``; 403/404 as for item uploads.
    """

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request=DatasetImportCreateSerializer,
        responses={
            202: DatasetImportJobSerializer,
            400: _ERROR_400,
            403: ErrorSerializer,
            404: _ERROR_404,
            413: OpenApiResponse(ErrorSerializer, description="Archive over the byte limit."),
        },
    )
    def post(self, request, pk: int):
        dataset = dataset_get_for_user(request.user, pk)
        dataset_check_can_add_items(request.user, dataset)
        data = DatasetImportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > settings.STUDYPLATFORM_MAX_ZIP_BYTES:
            return Response(
                {
                    "detail": f"{upload.name}: {upload.size} bytes exceeds the limit of "
                    f"{settings.STUDYPLATFORM_MAX_ZIP_BYTES}"
                },
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        if not zipfile.is_zipfile(upload):
            return Response(
                {"detail": f"{upload.name}: not a zip archive"}, status=status.HTTP_400_BAD_REQUEST
            )
        upload.seek(0)
        stored = default_storage.save(f"uploads/{uuid.uuid4().hex}.zip", upload)
        try:
            job = dataset_import_job_create(
                dataset=dataset, source_format="zip", source_path=default_storage.path(stored)
            )
        except ValueError as exc:
            default_storage.delete(stored)
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(DatasetImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(responses={200: DatasetImportJobSerializer, 404: _ERROR_404})
class DatasetImportDetailApi(RetrieveAPIView):
    """``GET /api/imports/<id>/``: status, ``total_files``, ``processed_files`` and the
    per-file ``report`` (imported count, duplicates, failures with reasons)."""

    serializer_class = DatasetImportJobSerializer

    def get_object(self):
        return import_job_get_for_user(self.request.user, self.kwargs["pk"])


# --- explanation jobs -----------------------------------------------------------------------


class ExplanationJobListCreateApi(ListAPIView):
    """``GET /api/jobs/``: the jobs over datasets you can see, newest first (paginated).

    ``POST /api/jobs/`` ``{"model": id, "dataset": id, "method": "gradcam", "top_k": 4}``:
    create a job over every item of the dataset; it is sent to the workers once the request's
    transaction commits. 201 with the job; 400 for a model or dataset you cannot see (read as
    unknown), an unknown method, a ``top_k`` outside 1..number of classes, an empty dataset,
    or a dataset whose classes share no name with the model's.
    """

    serializer_class = ExplanationJobSerializer

    def get_queryset(self):
        datasets = visible_to(Dataset.objects.all(), self.request.user)
        return ExplanationJob.objects.filter(dataset__in=datasets).order_by("-created_at", "-id")

    @extend_schema(
        request=ExplanationJobCreateSerializer,
        responses={201: ExplanationJobSerializer, 400: _ERROR_400},
    )
    def post(self, request):
        data = ExplanationJobCreateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        try:
            job = explanation_job_create(**data.validated_data)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(ExplanationJobSerializer(job).data, status=status.HTTP_201_CREATED)


@extend_schema(responses={200: ExplanationJobSerializer, 404: _ERROR_404})
class ExplanationJobDetailApi(RetrieveAPIView):
    """``GET /api/jobs/<id>/``: status and progress of an explanation job; 404 when you
    cannot see its dataset."""

    serializer_class = ExplanationJobSerializer

    def get_object(self):
        return job_get_for_user(self.request.user, self.kwargs["pk"])
