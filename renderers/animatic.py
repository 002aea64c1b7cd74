"""The animatic backend: a storyboard card per shot, with its camera move simulated as a pan or zoom.

It runs anywhere (no GPU, no weights), at the spec's size, fps and frame count,
and says on every frame and in its record that it is an animatic.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nightshift.schemas import RenderSpec, Shot

_MARGIN = 0.2  # the card is drawn this much larger than the frame, so the camera has room to move
_PANS = {"pan left": (1, 0), "pan right": (-1, 0), "tilt up": (0, 1), "tilt down": (0, -1),
         "tracking": (-1, 0), "dolly": (-1, 0), "crane up": (0, 1), "crane down": (0, -1), "drone": (-1, -1)}
_ZOOMS = {"push in": 1, "pull out": -1, "orbit": 1}


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_card(shot: Shot, spec: RenderSpec) -> Image.Image:
    """The storyboard card, drawn oversize: shot id, framing, camera move, action, dialogue, timing."""
    width, height = int(spec.width * (1 + _MARGIN)), int(spec.height * (1 + _MARGIN))
    card = Image.new("RGB", (width, height), (24, 26, 32))
    draw = ImageDraw.Draw(card)
    unit = max(10, height // 28)
    x0, y = int(width * _MARGIN / 2) + unit, int(height * _MARGIN / 2) + unit
    draw.rectangle([x0 - unit // 2, y - unit // 2, width - x0 + unit // 2, height - y + unit // 2], outline=(90, 96, 110), width=2)
    draw.text((x0, y), f"ANIMATIC  {shot.id}", font=_font(int(unit * 1.4)), fill=(255, 196, 64))
    y += int(unit * 2.2)
    lens = f", {shot.lens}" if shot.lens else ""
    meta = f"{shot.framing.value}{lens} / {shot.camera_move.value} / {spec.num_frames} frames @ {spec.fps:g} fps ({spec.num_frames / spec.fps:.2f}s)"
    draw.text((x0, y), meta, font=_font(unit), fill=(170, 180, 200))
    y += int(unit * 1.8)
    columns = max(20, int((width - 2 * x0) / (unit * 0.55)))
    for label, text, colour in (("", shot.action, (235, 235, 235)), ("", shot.dialogue, (140, 210, 255))):
        for line in textwrap.wrap(text, columns)[:6]:
            draw.text((x0, y), label + line, font=_font(unit), fill=colour)
            y += int(unit * 1.3)
        y += unit // 2
    if shot.characters:
        draw.text((x0, y), "in frame: " + ", ".join(shot.characters), font=_font(int(unit * 0.9)), fill=(160, 160, 160))
    return card


@dataclass(frozen=True)
class AnimaticRenderer:
    """Renders a shot as a moving storyboard card. Deterministic: same spec, same frames."""

    name: str = "animatic"

    def frames(self, shot: Shot, spec: RenderSpec) -> Iterator[np.ndarray]:
        card = draw_card(shot, spec)
        cw, ch = card.size
        pan = _PANS.get(shot.camera_move.value, (0, 0))
        zoom = _ZOOMS.get(shot.camera_move.value, 0)
        last = max(1, spec.num_frames - 1)
        for index in range(spec.num_frames):
            t = index / last
            scale = 1.0 - 0.15 * (t if zoom > 0 else 1 - t) if zoom else 1.0
            w, h = spec.width * scale, spec.height * scale
            # Centre, shifted along the pan direction across the spare margin.
            cx = cw / 2 + pan[0] * (t - 0.5) * (cw - w) * 0.9
            cy = ch / 2 + pan[1] * (t - 0.5) * (ch - h) * 0.9
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            frame = card.resize((spec.width, spec.height), Image.BILINEAR, box=box)
            yield np.asarray(frame)
