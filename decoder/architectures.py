"""The two supported checkpoint families: how their config.json and weight names map onto `DiffusionLM`.

LLaDA (LLaDA-8B-Instruct, LLaDA-1.5) uses OLMo-style names (`d_model`, `model.transformer.blocks.N.q_proj`); Dream
(Dream-v0-7B) uses Qwen2 names (`hidden_size`, `model.layers.N.self_attn.q_proj`) with GQA, q/k/v biases and
shifted logits. Everything architecture-specific lives here so the model and the decoder stay generic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ModelLoadError
from .model import ModelArgs

# LLaDA's special ids (shared by LLaDA-8B-Instruct and LLaDA-1.5); used when a config.json omits them.
LLADA_MASK_ID, LLADA_EOS_ID, LLADA_EOT_ID = 126336, 126081, 126348
DREAM_MASK_ID, DREAM_EOS_ID = 151666, 151643


@dataclass(frozen=True)
class Architecture:
    name: str
    # (regex over the checkpoint's name, template of our name); applied in order, first match wins.
    weight_names: tuple[tuple[str, str], ...]
    # The first denoising step of a block: "threshold" (LLaDA: tau0 plus the forced argmax) or "first_position"
    # (Dream: exactly one token, the block's first position; its logits come from the position before the block,
    # which only the full refresh forward sees).
    first_step_rule: str

    def our_name(self, hf_name: str) -> str | None:
        for pattern, template in self.weight_names:
            m = re.fullmatch(pattern, hf_name)
            if m:
                return template.format(*m.groups())
        return None

    def hf_name(self, our_name: str) -> str:
        """Inverse mapping, used to save a model in the checkpoint's own layout."""
        for pattern, template in self.weight_names:
            regex = re.escape(template).replace(r"\{\}", r"(\d+)")
            m = re.fullmatch(regex, our_name)
            if m:
                name = pattern.replace(r"\.", ".").replace(r"(\d+)", "{}")
                return name.format(*m.groups())
        raise KeyError(our_name)


_LAYER = r"(\d+)"
LLADA = Architecture(
    name="llada",
    weight_names=(
        (r"model\.transformer\.wte\.weight", "embed.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.attn_norm\.weight", "layers.{}.attn_norm.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.ff_norm\.weight", "layers.{}.mlp_norm.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.q_proj\.weight", "layers.{}.attn.wq.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.k_proj\.weight", "layers.{}.attn.wk.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.v_proj\.weight", "layers.{}.attn.wv.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.attn_out\.weight", "layers.{}.attn.wo.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.ff_proj\.weight", "layers.{}.mlp.w_gate.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.up_proj\.weight", "layers.{}.mlp.w_up.weight"),
        (rf"model\.transformer\.blocks\.{_LAYER}\.ff_out\.weight", "layers.{}.mlp.w_down.weight"),
        (r"model\.transformer\.ln_f\.weight", "norm.weight"),
        (r"model\.transformer\.ff_out\.weight", "lm_head.weight"),
    ),
    first_step_rule="threshold",
)

DREAM = Architecture(
    name="dream",
    weight_names=(
        (r"model\.embed_tokens\.weight", "embed.weight"),
        (rf"model\.layers\.{_LAYER}\.input_layernorm\.weight", "layers.{}.attn_norm.weight"),
        (rf"model\.layers\.{_LAYER}\.post_attention_layernorm\.weight", "layers.{}.mlp_norm.weight"),
        (rf"model\.layers\.{_LAYER}\.self_attn\.q_proj\.weight", "layers.{}.attn.wq.weight"),
        (rf"model\.layers\.{_LAYER}\.self_attn\.q_proj\.bias", "layers.{}.attn.wq.bias"),
        (rf"model\.layers\.{_LAYER}\.self_attn\.k_proj\.weight", "layers.{}.attn.wk.weight"),
        (rf"model\.layers\.{_LAYER}\.self_attn\.k_proj\.bias", "layers.{}.attn.wk.bias"),
        (rf"model\.layers\.{_LAYER}\.self_attn\.v_proj\.weight", "layers.{}.attn.wv.weight"),
        (rf"model\.layers\.{_LAYER}\.self_attn\.v_proj\.bias", "layers.{}.attn.wv.bias"),
        (rf"model\.layers\.{_LAYER}\.self_attn\.o_proj\.weight", "layers.{}.attn.wo.weight"),
        (rf"model\.layers\.{_LAYER}\.mlp\.gate_proj\.weight", "layers.{}.mlp.w_gate.weight"),
        (rf"model\.layers\.{_LAYER}\.mlp\.up_proj\.weight", "layers.{}.mlp.w_up.weight"),
        (rf"model\.layers\.{_LAYER}\.mlp\.down_proj\.weight", "layers.{}.mlp.w_down.weight"),
        (r"model\.norm\.weight", "norm.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
    ),
    first_step_rule="first_position",
)

ARCHITECTURES = {"llada": LLADA, "dream": DREAM}


def detect_architecture(config: dict[str, Any]) -> Architecture:
    """LLaDA or Dream from config.json's `model_type` / `architectures`; anything else is a clear error."""
    model_type = str(config.get("model_type", "")).lower()
    archs = " ".join(config.get("architectures") or []).lower()
    if model_type == "llada" or "llada" in archs:
        return LLADA
    if model_type == "dream" or "dream" in archs:
        return DREAM
    raise ModelLoadError(
        f"unknown architecture (model_type={config.get('model_type')!r}, "
        f"architectures={config.get('architectures')!r}); supported: LLaDA (model_type 'llada') "
        "and Dream (model_type 'Dream')"
    )


def _first_id(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        return int(value[0])
    return int(value)


def args_from_config(config: dict[str, Any]) -> ModelArgs:
    """ModelArgs from a Hugging Face config.json dict of either family."""
    arch = detect_architecture(config)
    try:
        if arch is LLADA:
            eos = _first_id(config.get("eos_token_id"), LLADA_EOS_ID)
            eot = config.get("eot_token_id", LLADA_EOT_ID if eos == LLADA_EOS_ID else None)
            return ModelArgs(
                arch="llada",
                vocab_size=int(config.get("embedding_size") or config["vocab_size"]),
                dim=int(config["d_model"]),
                n_layers=int(config["n_layers"]),
                n_heads=int(config["n_heads"]),
                n_kv_heads=int(config.get("n_kv_heads") or config["n_heads"]),
                ffn_dim=int(config.get("mlp_hidden_size") or config["d_model"] * config.get("mlp_ratio", 4)),
                norm_eps=float(config.get("rms_norm_eps", config.get("layer_norm_eps", 1e-5))),
                rope_theta=float(config.get("rope_theta", 10000.0)),
                max_seq_len=int(config.get("max_sequence_length", 4096)),
                qkv_bias=bool(config.get("include_qkv_bias", False) or config.get("include_bias", False)),
                tie_embeddings=bool(config.get("weight_tying", False)),
                mask_id=int(config.get("mask_token_id", LLADA_MASK_ID)),
                eos_id=eos,
                stop_ids=tuple(sorted({eos} | ({int(eot)} if eot is not None else set()))),
                pad_id=_first_id(config.get("pad_token_id"), eos),
                logits_shift=False,
            )
        eos = _first_id(config.get("eos_token_id"), DREAM_EOS_ID)
        return ModelArgs(
            arch="dream",
            vocab_size=int(config["vocab_size"]),
            dim=int(config["hidden_size"]),
            n_layers=int(config["num_hidden_layers"]),
            n_heads=int(config["num_attention_heads"]),
            n_kv_heads=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
            ffn_dim=int(config["intermediate_size"]),
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 1e6)),
            max_seq_len=int(config.get("max_position_embeddings", 32768)),
            qkv_bias=True,
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            mask_id=int(config.get("mask_token_id", DREAM_MASK_ID)),
            eos_id=eos,
            stop_ids=(eos,),
            pad_id=_first_id(config.get("pad_token_id"), eos),
            logits_shift=True,
        )
    except KeyError as exc:
        raise ModelLoadError(f"config.json of a {arch.name} checkpoint lacks the field {exc}") from None
    except (TypeError, ValueError) as exc:  # int("abc"), float([1]): a hand-edited or damaged config.json
        raise ModelLoadError(f"config.json of a {arch.name} checkpoint holds a value of the wrong type: {exc}") from None


def config_from_args(args: ModelArgs) -> dict[str, Any]:
    """A config.json dict in the checkpoint family's own field names (inverse of `args_from_config`)."""
    if args.arch == "llada":
        return {
            "architectures": ["LLaDAModelLM"],
            "model_type": "llada",
            "d_model": args.dim,
            "n_layers": args.n_layers,
            "n_heads": args.n_heads,
            "n_kv_heads": args.n_kv_heads,
            "mlp_hidden_size": args.ffn_dim,
            "vocab_size": args.vocab_size,
            "embedding_size": args.vocab_size,
            "max_sequence_length": args.max_seq_len,
            "rope_theta": args.rope_theta,
            "rms_norm_eps": args.norm_eps,
            "layer_norm_type": "rms",
            "block_type": "llama",
            "activation_type": "silu",
            "weight_tying": args.tie_embeddings,
            "include_bias": False,
            "include_qkv_bias": args.qkv_bias,
            "mask_token_id": args.mask_id,
            "eos_token_id": args.eos_id,
            "pad_token_id": args.pad_id if args.pad_id is not None else args.eos_id,
            "eot_token_id": next((i for i in args.stop_ids if i != args.eos_id), None),
        }
    return {
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "hidden_size": args.dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads,
        "intermediate_size": args.ffn_dim,
        "hidden_act": "silu",
        "vocab_size": args.vocab_size,
        "max_position_embeddings": args.max_seq_len,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "tie_word_embeddings": args.tie_embeddings,
        "mask_token_id": args.mask_id,
        "eos_token_id": args.eos_id,
        "pad_token_id": args.pad_id if args.pad_id is not None else args.eos_id,
    }


# Shapes of the real checkpoints (from their config.json), for random-weight models in tests and benchmarks.
PRESETS: dict[str, dict[str, Any]] = {
    "llada-8b": config_from_args(
        ModelArgs(
            arch="llada", vocab_size=126464, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=12288,
            norm_eps=1e-5, rope_theta=500000.0, max_seq_len=4096, mask_id=LLADA_MASK_ID, eos_id=LLADA_EOS_ID,
            stop_ids=(LLADA_EOS_ID, LLADA_EOT_ID), pad_id=LLADA_EOS_ID,
        )
    ),
    "dream-7b": config_from_args(
        ModelArgs(
            arch="dream", vocab_size=152064, dim=3584, n_layers=28, n_heads=28, n_kv_heads=4, ffn_dim=18944,
            norm_eps=1e-6, rope_theta=1e6, max_seq_len=131072, qkv_bias=True, mask_id=DREAM_MASK_ID,
            eos_id=DREAM_EOS_ID, stop_ids=(DREAM_EOS_ID,), pad_id=DREAM_EOS_ID, logits_shift=True,
        )
    ),
}
