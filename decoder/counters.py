"""Exact cost counters of one `generate()` call, so runs on different hardware can be compared by work done."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Counters:
    """Work done by one generation (summed over the batch).

    nfe              model forward calls (a batched call counts once).
    row_forwards     forwards summed over rows: what NFE would be if each row ran alone.
    query_tokens     tokens fed, summed over forwards and rows.
    key_tokens       keys attended per forward (cached prefix + fed), summed over forwards and rows.
    attended_pairs   query x key pairs: the attention cost, (queries fed) x (keys) summed over forwards and rows.
    generated_tokens answer tokens before the first stop id (EOS, or e.g. LLaDA's <|eot_id|>), summed over rows.
    non_eos_tokens   answer ids != EOS over the whole answer region (the reference code's raw count).
    wall_time_s      wall time of the whole call, device synchronised at both ends.
    """

    nfe: int = 0
    row_forwards: int = 0
    query_tokens: int = 0
    key_tokens: int = 0
    attended_pairs: int = 0
    generated_tokens: int = 0
    non_eos_tokens: int = 0
    wall_time_s: float = 0.0

    def add_forward(self, rows: int, fed: int, keys: int) -> None:
        self.nfe += 1
        self.row_forwards += rows
        self.query_tokens += rows * fed
        self.key_tokens += rows * keys
        self.attended_pairs += rows * fed * keys

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}

    def __iadd__(self, other: Counters) -> Counters:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)
        return self
