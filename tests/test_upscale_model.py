"""The super-resolution upscale path: tiling is exact, frames stream through the network into a 4K clip."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from nightshift.errors import NightshiftError
from nightshift.renderers.encode import encode_frames, probe
from nightshift.renderers.upscale import UpscaleSettings, upscale_to_4k
from nightshift.renderers.upscale_model import SuperResolution, load_super_resolution, upscale_tiled

HAS_SPANDREL = importlib.util.find_spec("spandrel") is not None and importlib.util.find_spec("torchvision") is not None


def tiny_x2_network(seed: int = 0) -> torch.nn.Module:
    """Two 3x3 convolutions then a pixel shuffle: a 2x network whose receptive field reaches 2 pixels."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.Sigmoid(), torch.nn.PixelShuffle(2)).eval()


@torch.inference_mode()
def test_tiles_stitch_to_the_untiled_result() -> None:
    network = tiny_x2_network()
    image = torch.rand(1, 3, 70, 90)
    whole = network(image)
    tiled = upscale_tiled(network, image, scale=2, tile=32, overlap=4)
    assert tiled.shape == (1, 3, 140, 180)
    assert torch.allclose(tiled, whole, atol=1e-5)
    # Without overlap the tile seams differ: the overlap is what makes tiling exact.
    seams = upscale_tiled(network, image, scale=2, tile=32, overlap=0)
    assert not torch.allclose(seams, whole, atol=1e-3)


def test_tile_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="overlap"):
        SuperResolution(tiny_x2_network(), 2, "tiny", tile=32, overlap=16)


def test_model_upscale_streams_to_4k(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(6)]
    source = tmp_path / "native.mp4"
    encode_frames(iter(frames), source, Fraction(24000, 1001))
    model = SuperResolution(tiny_x2_network(), 2, "tiny-x2", tile=48, overlap=4)
    final = tmp_path / "shot.mp4"
    written = upscale_to_4k(source, final, UpscaleSettings(), model=model)
    info = probe(final)
    assert written == 6 and (info.width, info.height, info.frames) == (3840, 2160, 6)
    assert info.fps == Fraction(24000, 1001)
    assert not list(tmp_path.glob("*.partial*"))


def test_missing_weights_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(NightshiftError) as caught:
        load_super_resolution(tmp_path / "4x-missing.pth")
    assert "4x-missing.pth" in str(caught.value) and "upscale_model" in caught.value.report()


@pytest.mark.skipif(HAS_SPANDREL, reason="spandrel is importable here; the missing-dependency message cannot show")
def test_without_spandrel_the_error_says_how_to_install(tmp_path: Path) -> None:
    weights = tmp_path / "model.pth"
    torch.save(tiny_x2_network().state_dict(), weights)
    with pytest.raises(NightshiftError) as caught:
        load_super_resolution(weights)
    assert "spandrel" in str(caught.value) and "[sr]" in caught.value.report()


@pytest.mark.skipif(not HAS_SPANDREL, reason="spandrel needs a torchvision built for this torch (none for CPU torch here)")
def test_spandrel_loads_a_compact_esrgan(tmp_path: Path) -> None:
    from spandrel.architectures.Compact import Compact  # type: ignore[import-not-found]

    network = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)
    weights = tmp_path / "tiny-compact-x4.pth"
    torch.save(network.state_dict(), weights)
    model = load_super_resolution(weights, tile=32, overlap=8)
    assert model.scale == 4
    out = model.upscale_rgb(np.zeros((40, 40, 3), dtype=np.uint8))
    assert out.shape == (160, 160, 3)
