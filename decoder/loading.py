"""Load Hugging Face checkpoints (config.json + safetensors, sharded or not) into `DiffusionLM`, and save them.

`load_model(id_or_dir)` accepts a local directory, a bundled model name, or a hub id. Nothing here uses
`trust_remote_code`: the checkpoint's own config fields and weight names are mapped by `decoder.architectures`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .architectures import ARCHITECTURES, PRESETS, args_from_config, config_from_args, detect_architecture
from .errors import ModelLoadError, one_line
from .model import DiffusionLM, ModelArgs

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "bundled"
# Names of models shipped inside the package, resolved before the hub is asked.
BUNDLED_MODELS = {"dtune/tiny-arith": BUNDLED_DIR / "tiny-arith"}
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to load onto: `device` checked now (a typo like `tpu9`, CUDA on a machine without it, `cuda:3`
    with two GPUs), so it fails in one line before any weights are read; None = `default_device()`."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {str(device)!r} ({one_line(exc, first=True)}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {str(device)!r} asked for, but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} CUDA "
                                 "device(s) are visible")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise ModelLoadError(f"device {str(device)!r} is not supported; use cpu, cuda or cuda:N")
    return dev


def default_device() -> torch.device:
    """CUDA when present, else CPU (with a one-line notice, since CPU decoding of a real model is very slow)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    log.info("no CUDA device found: running on CPU")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPUs (the checkpoints' own dtype), float32 on CPU where bf16 matmuls are slow and inexact."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_checkpoint(id_or_dir: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory holding the checkpoint: the path itself, a bundled model, or a hub snapshot."""
    path = Path(id_or_dir).expanduser()
    if path.is_dir():
        return path
    name = str(id_or_dir)
    if name in BUNDLED_MODELS:
        bundled = BUNDLED_MODELS[name]
        if not (bundled / "config.json").exists():
            raise ModelLoadError(f"bundled model {name!r} is missing its files under {bundled}")
        return bundled
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelLoadError(f"{name!r} is neither a checkpoint directory nor a hub id of the form 'org/name'")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # the hub client raises many types: offline, 404, gated, auth
        raise ModelLoadError(
            f"could not fetch {name!r} from the Hugging Face hub ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "if this machine is offline, download the checkpoint elsewhere and pass its local directory"
        ) from None


def read_config(ckpt_dir: Path) -> dict[str, Any]:
    cfg_path = ckpt_dir / "config.json"
    if not cfg_path.exists():
        raise ModelLoadError(f"no config.json in {ckpt_dir}")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"config.json in {ckpt_dir} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise ModelLoadError(f"config.json in {ckpt_dir} can't be read: {exc}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"config.json in {ckpt_dir} must hold a JSON object")
    return config


def weight_files(ckpt_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: the shards named by the index, or the single file."""
    index = ckpt_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            raise ModelLoadError(f"{index} is not a valid safetensors index ({type(exc).__name__}: {exc})") from None
        files = [ckpt_dir / s for s in shards]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ModelLoadError(f"{ckpt_dir} lacks shard(s) named in its index: {', '.join(missing)}")
        return files
    single = ckpt_dir / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(ckpt_dir.glob("*.safetensors"))
    if found:
        return found
    raise ModelLoadError(f"no safetensors weights in {ckpt_dir} (expected model.safetensors or an index)")


def fingerprint(ckpt_dir: Path) -> str:
    """A cheap content id of a checkpoint: config.json plus every shard's safetensors header and size.

    Hashing 16 GB of weights on every load is too slow; the header lists every tensor's name, dtype, shape and
    byte offsets, which changes with any re-export. Small files (< 64 MB) are hashed in full.
    """
    h = hashlib.sha256((ckpt_dir / "config.json").read_bytes())
    for f in weight_files(ckpt_dir):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            if size < 64 * 2**20:
                h.update(fh.read())
            else:
                try:
                    (header_len,) = struct.unpack("<Q", fh.read(8))
                except struct.error:
                    raise ModelLoadError(f"{f} is not a safetensors file (shorter than its header)") from None
                h.update(fh.read(header_len))
    return h.hexdigest()[:16]


def check_weights(ckpt_dir: Path) -> None:
    """Every weight file opens as safetensors (its header parses and matches the file's size): a truncated or
    damaged download fails here, in one line, before a model is built."""
    for f in weight_files(ckpt_dir):
        try:
            with safe_open(str(f), framework="pt", device="cpu") as st:
                st.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{f} is not a readable safetensors file ({one_line(exc, first=True)}); re-download or "
                                 "re-export the checkpoint") from None


def inspect_checkpoint(id_or_dir: str | os.PathLike, revision: str | None = None) -> dict[str, Any]:
    """Everything about a checkpoint that can be checked without building the model: where it is, that its
    config.json maps onto a supported architecture, that its weight files are intact, and its provenance
    (`{"id", "revision", "fingerprint", "path"}`, as `model.source`), e.g. to check a profile against it."""
    ckpt_dir = resolve_checkpoint(id_or_dir, revision)
    args_from_config(read_config(ckpt_dir))
    check_weights(ckpt_dir)
    return {"id": str(id_or_dir), "revision": revision or _snapshot_revision(ckpt_dir),
            "fingerprint": fingerprint(ckpt_dir), "path": str(ckpt_dir)}


def load_weights(model: DiffusionLM, ckpt_dir: Path, arch_name: str) -> None:
    """Copy a checkpoint's tensors into `model`, mapping names; any missing or unexpected tensor is an error."""
    arch = ARCHITECTURES[arch_name]
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    unexpected: list[str] = []
    for f in weight_files(ckpt_dir):
        try:
            _copy_tensors(f, arch, params, loaded, unexpected)
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{f} is not a readable safetensors file ({one_line(exc, first=True)}); re-download or "
                                 "re-export the checkpoint") from None
    if model.args.tie_embeddings:
        loaded.add("lm_head.weight")
    missing = sorted(set(params) - loaded)
    if missing or unexpected:
        raise ModelLoadError(
            f"weights of {ckpt_dir} don't match the {arch_name} architecture: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )


def _copy_tensors(f: Path, arch: Any, params: dict[str, torch.nn.Parameter], loaded: set[str],
                  unexpected: list[str]) -> None:
    """Copy one safetensors file's tensors into `params` (by mapped name), noting what was loaded and what wasn't
    expected."""
    with safe_open(str(f), framework="pt", device="cpu") as st:
        for hf_name in st.keys():
            ours = arch.our_name(hf_name)
            if ours is None or ours not in params:
                unexpected.append(hf_name)
                continue
            tensor = st.get_tensor(hf_name)
            target = params[ours]
            if tuple(tensor.shape) != tuple(target.shape):
                raise ModelLoadError(
                    f"{hf_name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(target.shape)}"
                )
            with torch.no_grad():
                target.copy_(tensor.to(target.dtype))
            loaded.add(ours)


def load_tokenizer(ckpt_dir: Path):
    """The checkpoint's tokenizer through `transformers`, without remote code.

    Dream ships a custom tokenizer class (remote code); its files are plain Qwen2 BPE, so when AutoTokenizer
    refuses we fall back to the fast tokenizer built from tokenizer.json.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    # AutoTokenizer peeks at config.json and warns that `llada` is not a transformers model type: true and
    # irrelevant here (we only want the tokenizer), so keep that line off the user's console.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(ckpt_dir), trust_remote_code=False)
    except Exception as exc:
        tok_file = ckpt_dir / "tokenizer.json"
        if not tok_file.exists():
            raise ModelLoadError(f"could not load the tokenizer in {ckpt_dir}: {exc}") from None
        special: dict[str, Any] = {}
        cfg_file = ckpt_dir / "tokenizer_config.json"
        if cfg_file.exists():
            cfg = json.loads(cfg_file.read_text())
            special = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token") if cfg.get(k)}
            if cfg.get("chat_template"):
                special["chat_template"] = cfg["chat_template"]
        return PreTrainedTokenizerFast(tokenizer_file=str(tok_file), **special)
    finally:
        hf_logging.set_verbosity(verbosity)


def load_model(
    id_or_dir: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    with_tokenizer: bool = True,
    compile: bool = False,
):
    """Load a LLaDA- or Dream-architecture checkpoint; returns `(model, tokenizer)` (tokenizer None if not asked).

    The model is in eval mode on `device` (default: CUDA if present) in `dtype` (default: bf16 on GPU, fp32 on
    CPU), its parameters allocated there in that dtype (never in float32 first), and carries `model.source` =
    {"id", "revision", "fingerprint", "path"} for provenance. `compile=True`: the fused path (`DiffusionLM.fuse`),
    and on CUDA each block through `torch.compile` (see `compile_model`); `model.compiled` says which.
    """
    ckpt_dir = resolve_checkpoint(id_or_dir, revision)
    config = read_config(ckpt_dir)
    args = args_from_config(config)
    dev = resolve_device(device)
    check_weights(ckpt_dir)  # a damaged file fails before the model is allocated
    dt = _as_dtype(dtype) if dtype is not None else default_dtype(dev)
    model = _materialise(args, dev, dt)
    load_weights(model, ckpt_dir, args.arch)
    model.eval()
    if compile:
        compile_model(model)
    model.source = {
        "id": str(id_or_dir),
        "revision": revision or _snapshot_revision(ckpt_dir),
        "fingerprint": fingerprint(ckpt_dir),
        "path": str(ckpt_dir),
    }
    tokenizer = load_tokenizer(ckpt_dir) if with_tokenizer else None
    return model, tokenizer


def build_random_model(
    config: dict[str, Any] | str | ModelArgs,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    seed: int = 0,
    std: float = 0.02,
    compile: bool = False,
) -> DiffusionLM:
    """A model of a real checkpoint's shapes with random weights, from a config.json dict, a preset name
    ("llada-8b", "dream-7b") or ModelArgs; for tests and benchmarks, where real weights can't be downloaded.
    `compile` as in `load_model`."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ModelLoadError(f"unknown preset {config!r}; known: {', '.join(PRESETS)}")
        config = PRESETS[config]
    args = config if isinstance(config, ModelArgs) else args_from_config(config)
    dev = torch.device(device)
    model = _materialise(args, dev, _as_dtype(dtype))
    gen = torch.Generator(device=dev).manual_seed(seed)
    model.init_weights(std=std, generator=gen)
    model.source = {"id": f"random:{args.arch}", "revision": None, "fingerprint": f"seed{seed}", "path": None}
    model.eval()
    if compile:
        compile_model(model)
    return model


@contextlib.contextmanager
def _initialisers_skipped() -> Iterator[None]:
    """torch.nn.init's in-place initialisers as no-ops while a model whose weights come next is built: on the meta
    device they would run torch's Python reference kernels, whose first call imports the compiler stack
    (torch._dynamo, ~2 CPU-s of every command that loads a model) to initialise nothing."""
    names = ("uniform_", "normal_", "kaiming_uniform_", "trunc_normal_", "zeros_", "ones_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _materialise(args: ModelArgs, device: torch.device, dtype: torch.dtype) -> DiffusionLM:
    """An uninitialised model on `device`: built on the meta device and cast there, so its parameters are
    allocated once, in `dtype` (an 8B model in bf16 peaks at its 16 GB, not at 32 GB of float32 first)."""
    with torch.device("meta"), _initialisers_skipped():
        model = DiffusionLM(args)
    # Module.to_empty's own step with torch.empty for torch.empty_like, whose meta-device reference kernel imports
    # torch.fx's symbolic shapes (~1 CPU-s) to allocate nothing.
    model = model._apply(lambda t: torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype,
                                               device=device))
    model.rope_cos, model.rope_sin = _rope_for(model, device)  # float32 tables, whatever the model's dtype
    return model


def compile_model(model: DiffusionLM) -> DiffusionLM:
    """The `compile=True` switch: the hand-fused path everywhere (it needs no compiler), plus `torch.compile` of
    every block on CUDA, where it fuses the remaining elementwise work. On CPU torch.compile is left out: it needs a
    C++ toolchain, takes minutes, and the fused eager path already cuts the ops (BENCHMARKS.md)."""
    model.fuse()
    if model.device.type == "cuda":
        for layer in model.layers:
            layer.compile(dynamic=True)
        model.compiled = True
    return model


def save_checkpoint(model: DiffusionLM, out_dir: str | os.PathLike, *, tokenizer=None, max_shard_bytes: int | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write `model` in its checkpoint family's Hugging Face layout: config.json, safetensors (sharded with an
    index when larger than `max_shard_bytes`) under the real checkpoints' parameter names, and the tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = ARCHITECTURES[model.args.arch]
    config = config_from_args(model.args)
    if dtype is not None:
        config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {}
    for name, p in model.named_parameters():
        if model.args.tie_embeddings and name == "lm_head.weight":
            continue
        state[arch.hf_name(name)] = p.detach().to("cpu", dtype or p.dtype).contiguous()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
        _portable_tokenizer_config(out / "tokenizer_config.json")
    return out


def _portable_tokenizer_config(path: Path) -> None:
    """transformers 5 writes its own backend class name and load-time state into tokenizer_config.json; the
    generic fast class loads under transformers 4 and 5 alike, and the state would be written back on reload."""
    if not path.exists():
        return
    cfg = json.loads(path.read_text())
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def _rope_for(model: DiffusionLM, device: torch.device):
    from .model import rope_tables

    return rope_tables(model.args.head_dim, model.args.rope_theta, min(model.args.max_seq_len, 8192), device)


def _snapshot_revision(ckpt_dir: Path) -> str | None:
    """The commit hash when the directory is a hub cache snapshot (…/snapshots/<sha>)."""
    return ckpt_dir.name if ckpt_dir.parent.name == "snapshots" else None


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]


__all__ = ["load_model", "build_random_model", "save_checkpoint", "detect_architecture", "BUNDLED_MODELS"]
