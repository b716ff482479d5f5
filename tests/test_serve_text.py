"""Block-by-block answer text (decoder.serving.text): the pieces a stream sends add up to the final text, which is
what decoding the request alone gives (end id, max_tokens, stop strings), and nothing sent is ever taken back."""

from __future__ import annotations

import pytest

from decoder.serving.text import TextAssembler

EOS = 0


def decode(ids: list[int]) -> str:
    """A byte-level decoder: each id is one byte; an incomplete UTF-8 sequence decodes to U+FFFD, as BPE's do."""
    return bytes(ids).decode("utf-8", errors="replace")


def ids(text: str) -> list[int]:
    return list(text.encode())


def stream(answer: list[int], block: int, **kwargs) -> tuple[list[str], TextAssembler]:
    asm = TextAssembler(decode, frozenset({EOS}), kwargs.pop("max_tokens", 10_000), **kwargs)
    pieces = [asm.feed(answer[i:i + block]) for i in range(0, len(answer), block)]
    pieces.append(asm.close())
    return pieces, asm


def test_pieces_add_up_to_the_text_up_to_the_end_id():
    pieces, asm = stream(ids("12 + 3 = 15") + [EOS] * 5, 4)
    assert "".join(pieces) == asm.text == "12 + 3 = 15" and asm.finish_reason == "stop"
    assert pieces[:3] == ["12 +", " 3 =", " 15"] and asm.ids == ids("12 + 3 = 15")


def test_a_multibyte_character_split_across_blocks_is_held_back_whole():
    answer = ids("caf\u00e9 \u20ac5")  # é is 2 bytes, € is 3
    pieces, asm = stream(answer, 4)
    assert "".join(pieces) == "caf\u00e9 \u20ac5" and asm.finish_reason == "length"
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[0] == "caf"  # the first byte of é waits for its second


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
def test_a_stop_string_split_across_blocks_is_never_sent_in_part(block):
    pieces, asm = stream(ids("x = 8.\n#### 8") + [EOS], block, stop=("\n####",))
    assert "".join(pieces) == asm.text == "x = 8." and asm.finish_reason == "stop"
    assert asm.ids == ids("x = 8.\n####")  # counted up to the token that completes the stop string


def test_the_earliest_of_several_stop_strings_wins():
    _, asm = stream(ids("a1b2c3"), 2, stop=("c", "2"))
    assert asm.text == "a1b" and asm.finish_reason == "stop"


def test_max_tokens_cuts_mid_block_with_finish_reason_length():
    pieces, asm = stream(ids("abcdefgh"), 3, max_tokens=5)
    assert "".join(pieces) == "abcde" and asm.finish_reason == "length" and len(asm.ids) == 5
    assert asm.feed(ids("zz")) == ""  # a finished row takes nothing more


def test_the_end_id_before_max_tokens_is_a_stop():
    _, asm = stream(ids("ab") + [EOS], 3, max_tokens=3)
    assert asm.text == "ab" and asm.finish_reason == "stop"
