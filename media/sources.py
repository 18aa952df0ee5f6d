"""The two non-network sources of media bytes: `data:` URLs and allow-listed local files."""

import base64
import binascii
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from media.errors import MediaError

DEFAULT_UPLOAD_DIR = Path(tempfile.gettempdir()) / "vidgraph-uploads"
"""Where the frontend spools uploads and encode workers read them (`upload-dir`, both sides)."""


def too_large(what: str, size: int, limit: int) -> MediaError:
    """The error for media over `max-fetch-bytes`; shared so every source words it alike."""
    return MediaError(
        f"{what} is {size} bytes, over the limit of {limit} bytes; send a smaller file",
        rule="max-fetch-bytes",
        status=413,
    )


def read_data_url(url: str, max_bytes: int) -> bytes:
    """Decode `data:<mime>;base64,<payload>`; percent-encoded data URLs are not media."""
    header, comma, payload = url.removeprefix("data:").partition(",")
    if not comma or not header.endswith(";base64"):
        raise MediaError(
            "a data: URL must look like data:<mime type>;base64,<base64 payload>",
            rule="data-url",
        )
    if len(payload) // 4 * 3 > max_bytes:
        raise too_large("the data: URL payload", len(payload) // 4 * 3, max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as error:
        raise MediaError(
            f"the data: URL payload is not valid base64 ({error}); encode the file with "
            "standard base64, without line breaks",
            rule="data-url",
        ) from None
    if not data:
        raise MediaError("the data: URL payload is empty; include the file", rule="empty-media")
    return data


def read_local_file(url: str, allowed_root: Path | None, max_bytes: int) -> bytes:
    """Read a `file://` URL or bare absolute path, only if it lies under `allowed_root`.

    The path is resolved (symlinks and `..` included) before the containment
    check, so neither can step outside the allowed folder.
    """
    if allowed_root is None:
        raise MediaError(
            f"{url} is a local file, and this server reads no local files; send an http(s) "
            "or data: URL (server option: allowed-local-media-path)",
            rule="allowed-local-media-path",
        )
    try:
        path = _local_path(url).resolve()
    except (OSError, ValueError) as error:
        raise MediaError(f"{url} is not a usable path ({error})", rule="local-file") from None
    root = allowed_root.resolve()
    if not path.is_relative_to(root):
        raise MediaError(
            f"{url} is outside the folder this server may read ({root})",
            rule="allowed-local-media-path",
        )
    if not path.is_file():
        raise MediaError(f"{url} does not exist or is not a file", rule="local-file")
    size = path.stat().st_size
    if size > max_bytes:
        raise too_large(str(url), size, max_bytes)
    data = path.read_bytes()
    if not data:
        raise MediaError(f"{url} is an empty file", rule="empty-media")
    return data


def _local_path(url: str) -> Path:
    if url.startswith("/"):
        return Path(url)
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise MediaError(
            f"{url} is not a local absolute path; write file:///absolute/path",
            rule="allowed-local-media-path",
        )
    return Path(unquote(parts.path))
