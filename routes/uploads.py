"""Receiving a video upload: streamed to a bounded temporary file, never held in memory.

FastAPI's own form parsing reads the whole body before the route runs (and
keeps up to 1 MiB of each file in memory), so the upload route parses the
multipart stream itself: file bytes go straight to a file in `upload-dir`,
the count is checked as they arrive, and a body over the limit is refused
(413) at the limit, without reading the rest. A declared `Content-Length` over
the limit is refused before anything is read. Whatever happens (a refusal, a
client that goes away mid-upload, an error later in the request), the file is
deleted: `Upload.delete` is called by the route in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from protocol.errors import ServiceError

MAX_FIELD_BYTES = 64 * 1024
"""A form field (the prompt, a number) is text; anything longer is not a mistake worth reading."""


def _bad(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(message, status=400, type="invalid_request_error", param=param)


def too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(
        f"the upload is {size} bytes or more, over this server's limit of {limit} bytes; "
        "send a shorter or smaller video, or host it and use /v1/inference/url "
        "(server option: max-upload-bytes)",
        status=413,
        type="invalid_request_error",
        code="upload_too_large",
    )


@dataclass
class Upload:
    """The uploaded file on disk and the form's text fields."""

    path: Path
    fields: dict[str, str] = field(default_factory=dict)
    received_file: bool = False

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _FormReader:
    """python-multipart callbacks: one file part (`file_field`) to disk, the rest as text."""

    def __init__(self, upload: Upload, file_field: str, file: object) -> None:
        self.upload = upload
        self.file_field = file_field
        self.file = file
        self.headers: dict[bytes, bytes] = {}
        self.header_name = b""
        self.header_value = b""
        self.name = ""
        self.to_file = False
        self.text = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value_part,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
        }

    def part_begin(self) -> None:
        self.headers, self.text = {}, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_part(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise _bad("a form part has no name (Content-Disposition: form-data; name=...)")
        self.name = options[b"name"].decode("utf-8", "replace")
        self.to_file = self.name == self.file_field
        if self.to_file and self.upload.received_file:
            raise _bad(f"send one `{self.file_field}` file per request", self.file_field)
        if self.name in self.upload.fields:
            raise _bad(f"the form field `{self.name}` is sent twice", self.name)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.to_file:
            self.file.write(data[start:end])  # type: ignore[attr-defined]
            return
        self.text += data[start:end]
        if len(self.text) > MAX_FIELD_BYTES:
            raise _bad(f"the form field `{self.name}` is over {MAX_FIELD_BYTES} bytes", self.name)

    def part_end(self) -> None:
        if self.to_file:
            self.upload.received_file = True
        else:
            self.upload.fields[self.name] = self.text.decode("utf-8", "replace")


async def receive_upload(
    request: Request, directory: Path, max_bytes: int, file_field: str = "video"
) -> Upload:
    """Stream the multipart body of `request` into a new file in `directory`.

    Raises `ServiceError` (400 malformed, 413 too large, 400 client gone) after
    deleting the file; on success the caller owns the file and must delete it.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise _bad("send the video as multipart/form-data with a `video` file field")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(int(declared), max_bytes)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="upload-", suffix=".video", dir=directory)
    upload = Upload(Path(name))
    try:
        with os.fdopen(handle, "wb") as file:
            reader = _FormReader(upload, file_field, file)
            parser = MultipartParser(params[b"boundary"], reader.callbacks())  # type: ignore[arg-type]
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(size, max_bytes)
                parser.write(chunk)
            parser.finalize()
        if not upload.received_file:
            raise _bad(f"the form has no `{file_field}` file", file_field)
        return upload
    except ClientDisconnect:
        upload.delete()
        raise _bad("the client went away before the upload was complete") from None
    except FormParserError as error:
        upload.delete()
        raise _bad(f"the multipart body is malformed ({error})") from None
    except BaseException:
        upload.delete()
        raise
