"""diffusers' speed settings, applied to a loaded transformer and recorded: a step cache, regional compilation,
the attention backend. All off by default: each trades exactness or start-up time for speed, and only a
measurement on the user's GPU says whether it pays (BENCHMARKS.md).

- `render.cache`: `first_block` (FirstBlockCache: skip the rest of the blocks when the first block's output
  barely changed since the last step; threshold `render.cache_threshold`), `taylorseer` (TaylorSeer: predict
  features between full steps from a Taylor expansion), or `none`. MagCache needs per-model calibration and
  is not offered.
- `render.compile_blocks`: `compile_repeated_blocks` (torch.compile of the one repeated transformer block,
  compiled once and reused: most of full compilation's gain for a fraction of its compile time).
- `render.attention_backend`: diffusers' attention dispatcher (`native` is PyTorch SDPA; `flash`, `sage`,
  `xformers` ... need their package and a GPU).
"""

from __future__ import annotations

from typing import Any

import torch

from nightshift.errors import NightshiftError

CACHES = ("none", "first_block", "taylorseer")


class SpeedSettingError(NightshiftError):
    """A speed setting this transformer or machine cannot take."""


def apply_speed_settings(transformer: Any, cache: str = "none", cache_threshold: float = 0.05,  # noqa: ANN401
                         compile_blocks: bool = False, attention_backend: str = "native") -> dict[str, object]:
    """Apply the settings to a loaded diffusers transformer; returns what a clip record keeps of them."""
    import diffusers
    from diffusers.models.attention_dispatch import AttentionBackendName

    record: dict[str, object] = {"cache": cache, "compile_repeated_blocks": compile_blocks,
                                 "attention_backend": attention_backend}
    if attention_backend not in {b.value for b in AttentionBackendName}:
        raise SpeedSettingError(f"render.attention_backend = {attention_backend!r} is not a diffusers attention backend",
                                "use native (PyTorch SDPA), or flash, sage, xformers ... with their package installed")
    if attention_backend != "native":
        try:
            transformer.set_attention_backend(attention_backend)
        except (RuntimeError, ValueError, ImportError) as error:
            raise SpeedSettingError(f"render.attention_backend = {attention_backend!r}: {error}",
                                    "install its package on a GPU machine, or use native") from None
    if cache not in CACHES:
        raise SpeedSettingError(f"render.cache = {cache!r} is not one of {', '.join(CACHES)}", "use none")
    if cache != "none":
        if not hasattr(transformer, "enable_cache"):
            raise SpeedSettingError(f"render.cache = {cache}: {type(transformer).__name__} takes no cache",
                                    "set render.cache = none for this model")
        blocks = sum(len(m) for name, m in transformer.named_children()
                     if isinstance(m, torch.nn.ModuleList) and "blocks" in name)
        if cache == "first_block" and blocks < 2:
            raise SpeedSettingError(f"render.cache = first_block needs a transformer of two blocks or more "
                                    f"({type(transformer).__name__} has {blocks})", "set render.cache = none")
        config = (diffusers.FirstBlockCacheConfig(threshold=cache_threshold) if cache == "first_block"
                  else diffusers.TaylorSeerCacheConfig())
        transformer.enable_cache(config)
        record["cache_config"] = {k: v for k, v in vars(config).items() if isinstance(v, (int, float, str, bool))}
    if compile_blocks:
        if not getattr(transformer, "_repeated_blocks", None):
            raise SpeedSettingError(f"render.compile_blocks: {type(transformer).__name__} names no repeated block",
                                    "set render.compile_blocks = false for this model")
        transformer.compile_repeated_blocks(fullgraph=True)
        record["compiled_blocks"] = list(transformer._repeated_blocks)
    return record
