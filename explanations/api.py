"""Researcher REST API of the explanations app (staff only)."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Dataset, Item
from .services import ImageSource, dataset_import


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


class ItemUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    name = serializers.CharField(max_length=200, required=False)
    label_index = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    label_name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class DatasetItemUploadApi(APIView):
    """POST /api/datasets/<id>/items/: add one image (multipart ``file``, optional ``name``,
    ``label_index``, ``label_name``).

    201 with the stored item; 400 with ``detail`` naming the problem for an undecodable,
    truncated, empty or oversized image (decompression bombs are refused from the header,
    before decoding); 409 when the name or the content is already in the dataset; 413 when
    the upload exceeds ``STUDYPLATFORM_MAX_UPLOAD_BYTES``. The format is detected from the
    content, not the file name.
    """

    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    def post(self, request, pk: int):
        dataset = get_object_or_404(Dataset, pk=pk)
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
