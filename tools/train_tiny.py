"""Train the bundled tiny masked-diffusion LM (``dtune/tiny-arith``) on the built-in ``arith`` task, on CPU.

    python -m tools.train_tiny --out decoder/bundled/tiny-arith --steps 6000 --seed 0

Why our own model: the tuner's tests and its out-of-the-box demo need a diffusion LM whose confidences mean
something, and LLaDA-8B doesn't run on a laptop. This script builds everything from nothing, deterministically
for a given seed (single thread, seeded data stream, seeded masks and init):

* **tokenizer** -- byte-level BPE trained on generated problems (vocab in the low hundreds), digits split one
  by one (arithmetic generalises far better), a space attached to the first digit of a number, so ``" 41"`` is
  ``"Ġ4", "1"``; ``<|endoftext|>`` is EOS and pad, ``<|mdm_mask|>`` the mask. Saved in Hugging Face format.
* **model** -- the LLaDA architecture of :mod:`decoder` at a tiny size, saved with
  :func:`decoder.save_checkpoint` so it loads through the same :func:`decoder.load_model` path as a real one.
* **data** -- LLaDA-SFT style rows: ``prompt`` (never masked) + ``" " + worked solution`` + EOS up to an answer
  length ``L``. ``L`` varies per batch (see :func:`answer_length`) so the model keeps predicting EOS far out.
* **objective** -- the masked-diffusion loss: each row draws ``t ~ U(0, 1)``, masks every answer position with
  probability ``t`` and pays ``CE / t`` on masked positions, normalised by ``L``. A fraction ``--semi-ar`` of the
  rows instead uses the states a block decoder actually visits: answer blocks before a random block clean, that
  block masked with probability ``t``, everything after it masked (loss on that block only, ``/ t``, normalised
  by the block size). This is still the diffusion objective, restricted to the masks that blockwise decoding
  meets; it was kept because it reached a given accuracy in far fewer steps on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from decoder import DecodeConfig, DiffusionLM, ModelArgs, generate, load_model, save_checkpoint
from tuner.tasks.arith import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_GEN_LENGTH,
    EOS_TOKEN,
    MASK_TOKEN,
    ArithConfig,
    format_prompt,
    sample_partition,
    score_completion,
    train_stream,
)

TOKENIZER_CORPUS_SEED = 0
TOKENIZER_CORPUS_SIZE = 4000
# Fixed so that the vocabulary (and so the token ids) never depends on the training run's task options.
TOKENIZER_CORPUS_CONFIG = ArithConfig(max_ops=4, answer_style="equations", max_start=40, max_amount=30, max_value=99)
# Pre-tokenisation: a digit (with its leading space), a word, a run of punctuation, or whitespace.
PRETOKEN_PATTERN = r" ?\d| ?[A-Za-z]+| ?[^\sA-Za-z\d]+|\s+"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; written next to the weights as training_config.json."""

    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    dim: int = 128
    n_layers: int = 6
    n_heads: int = 4
    ffn_dim: int = 352
    max_seq_len: int = 1280
    rope_theta: float = 10000.0
    init_std: float = 0.02
    semi_ar: float = 0.5  # fraction of rows trained on block-decoding states
    short_phase: float = 0.6  # curriculum: the first fraction of steps pads answers only a little
    eval_every: int = 500
    eval_size: int = 64
    threads: int = 1
    # The arith problems trained on (see tuner.tasks.arith.ArithConfig).
    max_ops: int = ArithConfig.max_ops
    answer_style: str = ArithConfig.answer_style
    max_start: int = ArithConfig.max_start
    max_amount: int = ArithConfig.max_amount
    max_value: int = ArithConfig.max_value

    def task_config(self) -> ArithConfig:
        return ArithConfig(max_ops=self.max_ops, answer_style=self.answer_style, max_start=self.max_start,
                           max_amount=self.max_amount, max_value=self.max_value)


# ------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(texts: list[str] | None = None):
    """A byte-level BPE tokenizer trained on generated problems, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        records = itertools.islice(train_stream(TOKENIZER_CORPUS_SEED, TOKENIZER_CORPUS_CONFIG),
                                   TOKENIZER_CORPUS_SIZE)
        texts = [format_prompt(r["question"]) + " " + r["answer"] for r in records]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, min_frequency=2, special_tokens=[EOS_TOKEN, MASK_TOKEN], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, mask_token=MASK_TOKEN,
        model_max_length=4096, clean_up_tokenization_spaces=False,
    )


def model_args(cfg: TrainConfig, tokenizer) -> ModelArgs:
    vocab = len(tokenizer)
    eos, mask = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    return ModelArgs(
        arch="llada", vocab_size=vocab, dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim, norm_eps=1e-5, rope_theta=cfg.rope_theta,
        max_seq_len=cfg.max_seq_len, mask_id=mask, eos_id=eos, stop_ids=(eos,), pad_id=eos,
    )


# ------------------------------------------------------------------------------------------------ data
def answer_length(step: int, cfg: TrainConfig, rng: random.Random, longest: int) -> int:
    """Answer length ``L`` of one batch (solution + EOS padding).

    Curriculum: during the first ``short_phase`` of training the padding is short (cheap rows, all of the
    compute on the arithmetic). Afterwards half the batches are still short and the rest use the default
    generation length or (less often) shorter or longer ones, up to 512, so the model keeps predicting EOS
    far out without paying for long rows on every step.
    """
    short = longest + rng.randint(1, 24)
    if step < cfg.short_phase * cfg.steps:
        return short
    choice = rng.random()
    if choice < 0.45:
        return short
    if choice < 0.80:
        length = DEFAULT_GEN_LENGTH
    elif choice < 0.90:
        length = rng.choice((64, 96))
    elif choice < 0.98:
        length = rng.choice((160, 192, 256))
    else:
        length = 512
    return max(length, longest + 1)


@dataclass
class Batch:
    x: torch.Tensor  # (B, P+L) clean ids
    pos: torch.Tensor  # (B, P+L) position ids (counted from each row's first real token)
    key_mask: torch.Tensor | None  # (B, P+L) False at left padding
    prompt_len: int
    answer_len: int
    solution_lens: list[int]  # answer tokens before the EOS padding, per row


def encode_rows(records: list[dict[str, Any]], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per record; the prompt tokenised exactly as ``decoder.generate`` does."""
    rows = []
    for r in records:
        prompt = list(tokenizer(format_prompt(r["question"]))["input_ids"])
        answer = list(tokenizer(" " + r["answer"], add_special_tokens=False)["input_ids"])
        rows.append((prompt, answer))
    return rows


def make_batch(rows: list[tuple[list[int], list[int]]], answer_len: int, eos_id: int) -> Batch:
    """Left-padded prompts (as the decoder pads a batch) followed by answer + EOS padding to ``answer_len``."""
    plen = max(len(p) for p, _ in rows)
    x = torch.full((len(rows), plen + answer_len), eos_id, dtype=torch.long)
    pads = torch.tensor([plen - len(p) for p, _ in rows])
    for r, (p, a) in enumerate(rows):
        x[r, plen - len(p) : plen] = torch.tensor(p)
        x[r, plen : plen + len(a)] = torch.tensor(a[:answer_len])
    total = x.shape[1]
    pos = (torch.arange(total).unsqueeze(0) - pads.unsqueeze(1)).clamp_min(0)
    key_mask = (torch.arange(total).unsqueeze(0) >= pads.unsqueeze(1)) if int(pads.max()) > 0 else None
    return Batch(x, pos, key_mask, plen, answer_len, [min(len(a), answer_len) for _, a in rows])


def diffusion_masks(batch: Batch, semi_ar: float, gen: torch.Generator):
    """Which answer positions are masked and each position's loss weight (B, L).

    Rows draw ``t`` stratified over the batch (lower variance, still U(0, 1) per row). Plain rows mask each
    position with probability ``t`` and weigh ``1 / (t L)``. Semi-AR rows (probability ``semi_ar``) pick a block
    size in {16, 32, 64} and a block -- mostly one that overlaps the solution, since all-EOS blocks are learnt
    almost at once -- keep earlier answer tokens clean, mask the block with probability ``t`` and everything
    after it, and weigh the block's masked positions ``1 / (t * block)``.
    """
    bsz, length = batch.x.shape[0], batch.answer_len
    t = (torch.arange(bsz, dtype=torch.float32) + torch.rand(bsz, generator=gen)) / bsz
    t = t[torch.randperm(bsz, generator=gen)].clamp_min(1e-3)
    u = torch.rand(bsz, length, generator=gen)
    masked = u < t[:, None]
    weight = masked.float() / (t[:, None] * length)
    semi = torch.rand(bsz, generator=gen) < semi_ar
    idx = torch.arange(length)
    for r in semi.nonzero().flatten().tolist():
        bs = (16, 32, 64)[int(torch.randint(3, (1,), generator=gen))]
        n_blocks = max(1, math.ceil(length / bs))
        if float(torch.rand(1, generator=gen)) < 0.85:
            n_blocks = min(n_blocks, batch.solution_lens[r] // bs + 1)
        start = int(torch.randint(n_blocks, (1,), generator=gen)) * bs
        end = min(start + bs, length)
        in_block = (idx >= start) & (idx < end)
        masked[r] = (in_block & masked[r]) | (idx >= end)
        weight[r] = (in_block & masked[r]).float() / (t[r] * (end - start))
    return masked, weight


def loss_on(model: DiffusionLM, batch: Batch, masked: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy on masked answer positions, averaged over rows."""
    mask_id = model.args.mask_id
    x = batch.x.clone()
    answer = x[:, batch.prompt_len :]
    answer[masked] = mask_id
    rows, cols = masked.nonzero(as_tuple=True)
    logits, _ = model(x, batch.pos, key_mask=batch.key_mask)
    picked = logits[:, batch.prompt_len :][rows, cols]
    ce = F.cross_entropy(picked.float(), batch.x[:, batch.prompt_len :][rows, cols], reduction="none")
    return (ce * weight[rows, cols]).sum() / x.shape[0]


# ------------------------------------------------------------------------------------------- training
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_model(cfg: TrainConfig, tokenizer) -> DiffusionLM:
    model = DiffusionLM(model_args(cfg, tokenizer))
    model.init_weights(std=cfg.init_std, generator=torch.Generator().manual_seed(cfg.seed))
    return model


def make_optimizer(model: DiffusionLM, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and embeddings."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embed")]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("embed")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


def evaluate(model: DiffusionLM, tokenizer, records: list[dict[str, Any]], config: DecodeConfig) -> float:
    """Exact-match accuracy (GSM8K strict ``####``) of ``records`` decoded with ``config``."""
    model.eval()
    prompts = [format_prompt(r["question"]) for r in records]
    out = generate(model, prompts, config, tokenizer=tokenizer)
    model.train()
    texts = out.texts or []
    return sum(score_completion(t, r["target"]).correct for t, r in zip(texts, records, strict=True)) / len(records)


def train(cfg: TrainConfig, out_dir: Path | None, *, progress: bool = True, log_file: Path | None = None,
          save_every: int = 0, init: Path | None = None) -> dict[str, Any]:
    """Run one training; returns {"losses", "evals", "params", "wall_s"}. Saves to ``out_dir`` when given:
    the final model, plus ``checkpoint-<step>`` subfolders every ``save_every`` steps. ``init``: start from
    that checkpoint's weights instead of a seeded random init (a second stage with a fresh schedule; the data
    stream and masks are seeded by ``cfg.seed``, so give a stage its own seed to see new problems)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if init is None:
        tokenizer = build_tokenizer()
        model = build_model(cfg, tokenizer)
    else:  # a later stage: continue from a saved checkpoint (its tokenizer and shape win over cfg's)
        model, tokenizer = load_model(init, device="cpu", dtype=torch.float32)
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    optimizer = make_optimizer(model, cfg)
    stream: Iterator[dict[str, Any]] = train_stream(cfg.seed, cfg.task_config())
    rng = random.Random(f"train-tiny/{cfg.seed}")
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_records = sample_partition("validation", cfg.eval_size, 1234, cfg.task_config()) if cfg.eval_size else []
    eval_config = DecodeConfig(mode="fast", gen_length=DEFAULT_GEN_LENGTH, block_size=DEFAULT_BLOCK_SIZE,
                               threshold=0.9)
    n_params = sum(p.numel() for p in model.parameters())
    history: dict[str, Any] = {"losses": [], "evals": [], "params": n_params, "init": str(init) if init else None}
    bar = _progress(cfg.steps, progress)
    t0 = time.perf_counter()
    smoothed = None
    for step in range(cfg.steps):
        rows = encode_rows([next(stream) for _ in range(cfg.batch_size)], tokenizer)
        longest = max(len(a) for _, a in rows)
        batch = make_batch(rows, answer_length(step, cfg, rng, longest), model.args.eos_id)
        masked, weight = diffusion_masks(batch, cfg.semi_ar, gen)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = loss_on(model, batch, masked, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        history["losses"].append(value)
        smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
        bar.update(1, f"loss {smoothed:.4f}")
        done = step + 1
        if eval_records and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            acc = evaluate(model, tokenizer, eval_records, eval_config)
            history["evals"].append({"step": done, "val_fast09_acc": acc, "loss": smoothed})
            _log(log_file, {"step": done, "loss": smoothed, "val_fast09_acc": acc,
                            "elapsed_s": round(time.perf_counter() - t0, 1)})
        if out_dir is not None and save_every and done % save_every == 0 and done < cfg.steps:
            _save(model, tokenizer, cfg, out_dir / f"checkpoint-{done:06d}", history)
    bar.close()
    history["wall_s"] = time.perf_counter() - t0
    if out_dir is not None:
        _save(model, tokenizer, cfg, out_dir, history)
    return history


def _save(model: DiffusionLM, tokenizer, cfg: TrainConfig, out: Path, history: dict[str, Any]) -> None:
    save_checkpoint(model, out, tokenizer=tokenizer)  # also makes tokenizer_config.json load under transformers 4
    record = asdict(cfg) | {"init": history["init"]}
    (out / "training_config.json").write_text(json.dumps(record, indent=2) + "\n")
    summary = {k: history[k] for k in ("params", "evals")} | {"final_loss": history["losses"][-1]}
    (out / "training_log.json").write_text(json.dumps(summary, indent=2) + "\n")


def _log(path: Path | None, record: dict[str, Any]) -> None:
    line = json.dumps(record)
    if path is None:
        print(line, flush=True)
    else:
        with open(path, "a") as fh:
            fh.write(line + "\n")


class _progress:
    """A tqdm bar when asked for, else a no-op (tests)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="train", mininterval=5.0, dynamic_ncols=True)

    def update(self, n: int, postfix: str) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix_str(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> None:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m tools.train_tiny", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("decoder/bundled/tiny-arith"))
    p.add_argument("--log", type=Path, default=None, help="append eval records (JSON lines) here")
    p.add_argument("--save-every", type=int, default=0, help="also save checkpoint-<step>/ every N steps")
    p.add_argument("--init", type=Path, default=None, help="continue from this checkpoint (a later stage)")
    for f in TrainConfig.__dataclass_fields__.values():
        value = getattr(defaults, f.name)
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value)
    ns = p.parse_args(argv)
    fields = {k: v for k, v in vars(ns).items() if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**fields)
    hist = train(cfg, ns.out, log_file=ns.log, save_every=ns.save_every, init=ns.init)
    print(json.dumps({"params": hist["params"], "wall_s": round(hist["wall_s"], 1), "evals": hist["evals"]}))


if __name__ == "__main__":
    main()


__all__ = ["ArithConfig", "TrainConfig", "build_tokenizer", "train", "main"]
