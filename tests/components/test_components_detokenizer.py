"""The detokenizer against a byte-level tokenizer whose tokens split UTF-8 characters."""

from components.detokenizer import Detokenizer


class ByteTokenizer:
    """Each token is one byte: the worst case for splitting multi-byte characters."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")


def _stream(text: str, stop: list[str] | None = None) -> tuple[list[str], Detokenizer]:
    detok = Detokenizer(ByteTokenizer(), stop)
    pieces = [detok.add([b]) for b in text.encode()]
    pieces.append(detok.flush())
    return pieces, detok


def test_never_splits_a_character() -> None:
    text = "héllo 世界 🎬 done"
    pieces, _ = _stream(text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "🎬" in pieces  # released whole, once its fourth byte arrived


def test_stop_string_is_cut_and_never_shown_in_part() -> None:
    pieces, detok = _stream("abc STOP def", stop=["STOP"])
    assert "".join(pieces) == "abc "
    assert detok.stopped
    assert not any("S" in p for p in pieces)


def test_earliest_stop_string_wins() -> None:
    pieces, _ = _stream("one two three", stop=["three", "two"])
    assert "".join(pieces) == "one "


def test_held_back_tail_is_released_at_the_end() -> None:
    pieces, detok = _stream("abcST", stop=["STOP"])
    assert "".join(pieces) == "abcST"
    assert pieces[-1] == "cST"  # the last len("STOP") - 1 characters wait for the end
    assert not detok.stopped


def test_bytes_that_never_complete_a_character_come_out_at_the_end() -> None:
    detok = Detokenizer(ByteTokenizer())
    pieces = [detok.add([b]) for b in b"ok \xe4\xb8"]  # a 3-byte character cut after 2 bytes
    pieces.append(detok.flush())
    assert "".join(pieces) == "ok \ufffd"
