"""One denoising step of LTX-Video 2B on CPU at a small size, with random bf16 weights at the published
configuration: peak resident memory (RSS) and seconds per step, for each quantization mode that runs on CPU.

Each mode runs in a process of its own, so its peak is its own. The transformer is built on the meta device
and materialised in bf16 (never in fp32), filled with random values, then stored as Nightshift stores it for
that mode (renderers/memory.py): `none` as bf16; `fp8` as float8 with layerwise casting to bf16; `int8`
with torchao's int8 weight-only config (applied with `quantize_`, the function diffusers' TorchAoConfig
calls). Text encoding is not part of a step: the prompt embeddings are random too. Three figures per mode:
the process's peak (loading included: the weights exist in bf16 before they are stored as fp8 or int8, as
they do when a pipeline is loaded), what stays resident once they are stored, and the peak during the step.

    .venv/bin/python benchmarks/ltx_step_memory.py            # all modes, a table for BENCHMARKS.md
    .venv/bin/python benchmarks/ltx_step_memory.py --mode fp8 # one mode, one JSON line
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import resource
import subprocess
import sys
import threading
import time

import psutil

MODES = ("none", "fp8", "int8")
LATENT = (2, 8, 8)  # latent frames, height, width: 9 frames at 256x256 through LTX's 8x32x32 VAE


def run_mode(mode: str) -> dict[str, object]:
    import torch
    from diffusers import LTXVideoTransformer3DModel

    from nightshift.renderers.memory import apply_fp8_storage

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("meta"):
        transformer = LTXVideoTransformer3DModel()
    transformer = transformer.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(0.0, 0.02)
    torch.set_default_dtype(torch.float32)
    if mode == "fp8":
        apply_fp8_storage(transformer, torch.bfloat16)
    elif mode == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(transformer, Int8WeightOnlyConfig())
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed pages (the bf16 originals) back, so resident is what is held
    process = psutil.Process()
    weights_rss = process.memory_info().rss / 2**30  # what stays resident once the weights are stored
    frames, height, width = LATENT
    tokens = frames * height * width
    latents = torch.randn(1, tokens, transformer.config.in_channels, dtype=torch.bfloat16)
    prompt = torch.randn(1, 128, transformer.config.caption_channels, dtype=torch.bfloat16)
    mask = torch.ones(1, 128, dtype=torch.bool)
    samples: list[int] = []
    sampling = threading.Event()

    def sample() -> None:  # the resident size while the step runs, every 10 ms
        while not sampling.is_set():
            samples.append(process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with torch.no_grad():
        started = time.perf_counter()
        out = transformer(hidden_states=latents, encoder_hidden_states=prompt, timestep=torch.tensor([500]),
                          encoder_attention_mask=mask, num_frames=frames, height=height, width=width,
                          rope_interpolation_scale=(8 / 24, 32, 32), return_dict=False)[0]
        seconds = time.perf_counter() - started
    sampling.set()
    sampler.join()
    assert out.shape == latents.shape and torch.isfinite(out.float()).all()
    return {"mode": mode, "parameters": sum(p.numel() for p in transformer.parameters()),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "rss_weights_gib": round(weights_rss, 2), "step_peak_rss_gib": round(max(samples) / 2**30, 2),
            "step_s": round(seconds, 2), "tokens": tokens,
            "torch": torch.__version__, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode)))
        return
    print("| quantization | process peak RSS, load included (GiB) | resident, weights stored (GiB) | "
          "peak during the step (GiB) | one step (s) | latent tokens |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        done = subprocess.run([sys.executable, __file__, "--mode", mode], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {mode} | failed: {done.stderr.strip().splitlines()[-1][:100]} | | | | |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {mode} | {row['peak_rss_gib']} | {row['rss_weights_gib']} | {row['step_peak_rss_gib']} | "
              f"{row['step_s']} | {row['tokens']} |")


if __name__ == "__main__":
    main()
