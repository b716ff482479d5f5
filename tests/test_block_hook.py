"""`generate(on_block=...)`: each committed block reaches the callback, and rows it returns stop decoding."""

from __future__ import annotations

import pytest
import torch
from decoder_helpers import EOS, ScriptedLM, random_model

from decoder import BlockEvent, ConfigError, DecodeConfig, generate

PROMPTS = [[5, 6, 7, 8], list(range(10, 22)), [30, 31]]
NO_EXIT = DecodeConfig(mode="fast", gen_length=64, block_size=16, threshold=0.5)


def test_blocks_arrive_in_order_and_add_up_to_the_answer_without_changing_it():
    model = random_model("llada", seed=3)
    events: list[BlockEvent] = []
    with_hook = generate(model, PROMPTS, NO_EXIT, on_block=events.append)
    assert torch.equal(with_hook.tokens, generate(model, PROMPTS, NO_EXIT).tokens)
    assert [(e.index, e.start) for e in events] == [(0, 0), (1, 16), (2, 32), (3, 48)]
    assert all(e.tokens.device.type == "cpu" and e.tokens.shape == (3, 16) for e in events)
    assert torch.equal(torch.cat([e.tokens for e in events], dim=1), with_hook.tokens)
    assert all(e.active == (True, True, True) for e in events)


def test_active_turns_false_after_a_row_exits_early():
    # EOS from position id 20 on: row 0 (prompt 4) sees it in its 2nd block, row 1 (prompt 12) in its 1st.
    model = ScriptedLM(target=lambda q: EOS if q >= 20 else 3 + q % 40, confidence=lambda q: 0.99)
    cfg = DecodeConfig(mode="streaming", gen_length=64, block_size=16, window=16, threshold=0.9, alpha=0.3)
    events: list[BlockEvent] = []
    generate(model, [[10, 11, 12, 13], list(range(10, 22))], cfg, on_block=events.append)
    assert [e.active for e in events] == [(True, False), (False, False)]


def test_a_cancelled_row_stops_at_once_and_the_other_rows_are_unchanged():
    model = random_model("llada", seed=3)
    alone = generate(model, PROMPTS, NO_EXIT, trace=True)

    def cancel_row_1_after_block_0(event: BlockEvent) -> list[int]:
        return [1] if event.index == 0 else []

    cut = generate(model, PROMPTS, NO_EXIT, on_block=cancel_row_1_after_block_0)
    for row in (0, 2):
        assert torch.equal(cut.tokens[row], alone.tokens[row]) and cut.row_nfe[row] == alone.row_nfe[row]
    assert torch.equal(cut.tokens[1, :16], alone.tokens[1, :16]) and (cut.tokens[1, 16:] == EOS).all()
    first_block_forwards = sum(1 for s in alone.trace if s["block"] == 0 and 1 in s["rows"])
    assert cut.row_nfe[1] == first_block_forwards < alone.row_nfe[1]


def test_cancelling_every_row_ends_the_call():
    model = random_model("llada", seed=3)
    events: list[BlockEvent] = []

    def cancel_all(event: BlockEvent) -> range:
        events.append(event)
        return range(len(event.active))

    result = generate(model, PROMPTS, NO_EXIT, on_block=cancel_all)
    assert len(events) == 1 and (result.tokens[:, 16:] == EOS).all()


def test_a_row_outside_the_batch_is_an_error():
    with pytest.raises(ConfigError, match="rows 0-2"):
        generate(random_model("llada", seed=3), PROMPTS, NO_EXIT, on_block=lambda e: [3])
