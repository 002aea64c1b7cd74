"""Model upscale: a super-resolution network from a local weights file, run in tiles, one frame at a time.

The network is loaded with spandrel (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT and the other
architectures it detects from the weights). Each frame is cut into overlapping tiles so a 4x model
on a 768x512 frame fits in a few GB of VRAM; the overlap is discarded when the tiles are stitched,
so a network whose receptive field fits in the overlap gives the same pixels as one untiled pass.
The FFmpeg chain in renderers.upscale then fits the result to 3840x2160 (pad or crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nightshift.errors import NightshiftError


@dataclass
class SuperResolution:
    """A network mapping (1, 3, H, W) RGB in [0, 1] to (1, 3, H*scale, W*scale)."""

    module: torch.nn.Module
    scale: int
    name: str
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    tile: int = 512
    overlap: int = 32

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"super-resolution scale {self.scale} must be at least 1")
        if self.tile < 16 or self.overlap < 0 or 2 * self.overlap >= self.tile:
            raise ValueError(f"tile {self.tile} with overlap {self.overlap}: need tile >= 16 and overlap < tile/2")
        self.module = self.module.to(device=self.device, dtype=self.dtype).eval()

    def describe(self) -> str:
        return f"{self.name} x{self.scale} (tiles {self.tile}, overlap {self.overlap}, {self.device})"

    @torch.inference_mode()
    def upscale_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H*scale, W*scale, 3) uint8."""
        image = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).unsqueeze(0).to(self.dtype) / 255.0
        result = upscale_tiled(self.module, image, self.scale, self.tile, self.overlap)
        return (result.clamp(0, 1) * 255.0).round().to(torch.uint8).squeeze(0).permute(1, 2, 0).cpu().numpy()


def _starts(length: int, core: int) -> list[int]:
    return list(range(0, max(length - core, 0) + 1, core)) + ([length - core] if length > core and length % core else [])


def upscale_tiled(module: torch.nn.Module, image: torch.Tensor, scale: int, tile: int, overlap: int) -> torch.Tensor:
    """Run `module` over `image` (1, C, H, W) in overlapping tiles; each tile keeps only its core."""
    _, channels, height, width = image.shape
    core = tile - 2 * overlap
    if height <= tile and width <= tile:
        return module(image)
    out = torch.empty((1, channels, height * scale, width * scale), dtype=image.dtype, device=image.device)
    core_h, core_w = min(core, height), min(core, width)
    for top in _starts(height, core_h):
        for left in _starts(width, core_w):
            # The tile reaches `overlap` pixels past the core on every side that has neighbours.
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            y1, x1 = min(top + core_h + overlap, height), min(left + core_w + overlap, width)
            result = module(image[:, :, y0:y1, x0:x1])
            dy, dx = (top - y0) * scale, (left - x0) * scale
            out[:, :, top * scale:(top + core_h) * scale, left * scale:(left + core_w) * scale] = \
                result[:, :, dy:dy + core_h * scale, dx:dx + core_w * scale]
    return out


def load_super_resolution(path: Path, device: str = "cpu", tile: int = 512, overlap: int = 32,
                          half: bool | None = None) -> SuperResolution:
    """Load a local super-resolution weights file (.pth, .safetensors) through spandrel."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NightshiftError(f"{path}: no such super-resolution weights file",
                              "set render.upscale_model to a local .pth or .safetensors file (e.g. a 4x ESRGAN model), "
                              "or leave it empty for FFmpeg's lanczos scaler")
    try:
        import spandrel
    except ImportError as error:
        raise NightshiftError(f"render.upscale_model needs spandrel, which could not be imported ({error})",
                              "pip install 'nightshift-studio[sr]' (spandrel needs torchvision built for your torch)") from None
    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_file(path)
    except Exception as error:  # noqa: BLE001 - spandrel raises many kinds for unknown weights
        raise NightshiftError(f"{path}: not a super-resolution model spandrel recognises ({error})",
                              "use an image super-resolution checkpoint such as ESRGAN, Real-ESRGAN, SwinIR or HAT") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.input_channels != 3:
        raise NightshiftError(f"{path}: {descriptor.architecture.name} is not a 3-channel image-to-image model",
                              "use an RGB super-resolution checkpoint")
    use_half = device.startswith("cuda") and descriptor.supports_half if half is None else half
    return SuperResolution(descriptor.model, descriptor.scale, descriptor.architecture.name, device,
                           torch.float16 if use_half else torch.float32, tile, overlap)
