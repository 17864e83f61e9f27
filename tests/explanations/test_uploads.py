"""The one helper that writes uploads to disk keeps them inside their folder."""

from django.core.files.uploadedfile import SimpleUploadedFile

from explanations.uploads import upload_write


def test_upload_names_are_sanitised_and_kept_inside_the_folder(tmp_path):
    path = upload_write(
        SimpleUploadedFile("../../etc/w eights.safetensors", b"abc"), tmp_path, "w.bin"
    )
    assert path == tmp_path / "w_eights.safetensors" and path.read_bytes() == b"abc"

    class Unnamed:  # a name that cannot be sanitised (the form layer usually refuses it)
        name = ".."

        def chunks(self):
            yield b"x"

    fallback = upload_write(Unnamed(), tmp_path / "sub", "classes.txt")
    assert fallback == tmp_path / "sub" / "classes.txt" and fallback.read_bytes() == b"x"
