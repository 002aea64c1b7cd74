"""The animatic backend: a storyboard in motion, drawn per shot from the shot list.

It runs anywhere (no GPU, no weights), at the spec's width, the delivery's aspect (16:9 by default,
so nothing is pillarboxed), the spec's fps and frame count. Each frame has two layers:
- the drawing: a horizon lit for the scene's time of day and figures sized by the framing (a wide
  shows small full figures, a medium from the waist, a close-up a head that fills the frame, a
  two-shot two figures, an over-the-shoulder a shoulder in the foreground, an insert the object),
  each named; the camera move (pan, tilt, push, pull ...) moves this layer only;
- the text, still, inside the title-safe area: ANIMATIC and the shot id, the scene heading, framing,
  camera move and length, the dialogue as subtitles (or the action as a caption), and a clock.
Every frame says it is an animatic, and so does its record.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nightshift.schemas import Framing, RenderSpec, Shot

_MARGIN = 0.2  # the drawing is this much larger than the frame, so the camera has room to move
_SAFE = 0.05  # title-safe inset on every side
_PANS = {"pan left": (1, 0), "pan right": (-1, 0), "tilt up": (0, 1), "tilt down": (0, -1),
         "tracking": (-1, 0), "dolly": (-1, 0), "crane up": (0, 1), "crane down": (0, -1), "drone": (-1, -1)}
_ZOOMS = {"push in": 1, "pull out": -1, "orbit": 1}
_SKIES = {"night": ((14, 18, 34), (30, 34, 48)), "dusk": ((70, 46, 60), (34, 30, 40)),
          "dawn": ((90, 80, 96), (44, 44, 52)), "day": ((120, 150, 180), (70, 80, 74))}
_FIGURE, _OUTLINE, _NAME = (196, 186, 170), (40, 36, 32), (250, 240, 220)
_PALETTE = [(196, 186, 170), (170, 190, 200), (200, 170, 170), (180, 200, 170)]


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def frame_size(spec: RenderSpec, aspect: Fraction | None) -> tuple[int, int]:
    """The spec's width at the delivery's aspect (both even), or the spec's own size without one."""
    if aspect is None:
        return spec.width, spec.height
    height = max(2, round(spec.width / aspect / 2) * 2)
    return spec.width, height


def _sky(heading: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    lowered = heading.lower()
    for word in ("night", "dusk", "dawn"):
        if word in lowered:
            return _SKIES[word]
    if "sunset" in lowered or "evening" in lowered:
        return _SKIES["dusk"]
    if "int." in lowered and "day" not in lowered:
        return _SKIES["night"]
    return _SKIES["day"]


def _person(draw: ImageDraw.ImageDraw, cx: float, top: float, head: float, colour: tuple[int, int, int],
            name: str, bottom: float) -> None:
    """A figure: head of radius `head` with its top at `top`, shoulders and body down to `bottom`."""
    draw.ellipse([cx - head, top, cx + head, top + 2 * head], fill=colour, outline=_OUTLINE, width=2)
    neck = top + 2 * head
    shoulders = head * 2.1
    draw.rounded_rectangle([cx - shoulders, neck + head * 0.15, cx + shoulders, max(bottom, neck + head)],
                           radius=int(head * 0.8), fill=colour, outline=_OUTLINE, width=2)
    if name:
        size = max(10, int(head * 0.45))
        draw.text((cx, neck + head * 0.6), name, font=_font(size), fill=_OUTLINE, anchor="mt")


def draw_scene(shot: Shot, width: int, height: int, heading: str) -> Image.Image:
    """The drawing layer, oversize by _MARGIN: horizon, light, and the figures the framing calls for."""
    w, h = int(width * (1 + _MARGIN)), int(height * (1 + _MARGIN))
    sky, ground = _sky(heading)
    card = Image.new("RGB", (w, h), sky)
    draw = ImageDraw.Draw(card)
    horizon = h * 0.62
    draw.rectangle([0, horizon, w, h], fill=ground)
    names = [name.title() for name in shot.characters] or ([""] if shot.framing not in (
        Framing.wide, Framing.extreme_wide, Framing.aerial, Framing.insert) else [])
    colours = [_PALETTE[i % len(_PALETTE)] for i in range(len(names))]
    framing = shot.framing
    if framing in (Framing.wide, Framing.extreme_wide, Framing.full, Framing.medium_wide, Framing.aerial):
        tall = {Framing.extreme_wide: 0.14, Framing.wide: 0.26, Framing.aerial: 0.1, Framing.full: 0.5,
                Framing.medium_wide: 0.7}[framing]
        head = h * tall / 7
        for index, name in enumerate(names):
            cx = w * (0.5 + (index - (len(names) - 1) / 2) * 0.12)
            feet = horizon + h * 0.08 if framing is not Framing.medium_wide else h
            _person(draw, cx, feet - h * tall, head, colours[index], name, feet)
    elif framing is Framing.insert:
        draw.rounded_rectangle([w * 0.3, h * 0.3, w * 0.7, h * 0.72], radius=int(h * 0.04), fill=(150, 130, 100),
                               outline=_OUTLINE, width=3)
        draw.text((w / 2, h * 0.5), "INSERT", font=_font(int(h * 0.06)), fill=_OUTLINE, anchor="mm")
    elif framing is Framing.over_the_shoulder:
        other = names[-1] if len(names) > 1 else (names[0] if names else "")
        near = names[0] if len(names) > 1 else ""
        _person(draw, w * 0.64, h * 0.28, h * 0.11, colours[-1], other, h)
        _person(draw, w * 0.2, h * 0.2, h * 0.24, (52, 48, 46), near, h)  # the shoulder in the foreground
    elif framing in (Framing.close, Framing.extreme_close):
        head = h * (0.34 if framing is Framing.close else 0.7)
        _person(draw, w / 2, h * 0.5 - head * (1.0 if framing is Framing.close else 0.9), head, colours[0],
                names[0], h)
        if framing is Framing.extreme_close:
            for side in (-1, 1):
                draw.ellipse([w / 2 + side * head * 0.45 - head * 0.16, h * 0.46, w / 2 + side * head * 0.45
                              + head * 0.16, h * 0.56], fill=(250, 250, 245), outline=_OUTLINE, width=3)
    else:  # medium, medium close-up, two-shot, point of view
        head = h * (0.14 if framing is Framing.medium_close else 0.1)
        count = max(1, len(names))
        for index, name in enumerate(names or [""]):
            cx = w * (0.5 + (index - (count - 1) / 2) * (0.3 if count > 1 else 0))
            # Heads a little above the centre, below the header band.
            _person(draw, cx, h * 0.3, head, colours[index] if colours else _FIGURE, name, h)
        if framing is Framing.pov:
            draw.rectangle([0, 0, w, h], outline=(0, 0, 0), width=int(h * 0.08))
    return card


def _overlay(shot: Shot, spec: RenderSpec, width: int, height: int, heading: str) -> Image.Image:
    """The still text layer: everything inside the title-safe area."""
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    unit = max(9, height // 26)
    x0, y0 = int(width * _SAFE), int(height * _SAFE)
    x1, y1 = width - x0, height - y0
    seconds = spec.num_frames / spec.fps
    draw.rectangle([x0 - unit // 3, y0 - unit // 3, x1 + unit // 3, y0 + int(unit * 3.4)], fill=(0, 0, 0, 150))
    draw.text((x0, y0), f"ANIMATIC  {shot.id}", font=_font(int(unit * 1.2)), fill=(255, 196, 64, 255))
    lens = f", {shot.lens}" if shot.lens else ""
    draw.text((x1, y0), f"{shot.framing.value}{lens} / {shot.camera_move.value} / {seconds:.1f} s",
              font=_font(unit), fill=(220, 225, 235, 255), anchor="ra")
    draw.text((x0, y0 + int(unit * 1.8)), heading[:90], font=_font(unit), fill=(235, 235, 235, 255))
    text, colour = (shot.dialogue, (150, 215, 255, 255)) if shot.dialogue else (shot.action, (235, 235, 235, 255))
    columns = max(20, int((x1 - x0) / (unit * 0.55)))
    lines = textwrap.wrap(text[:600], columns)[:2]
    if lines:
        top = y1 - int(unit * 1.35) * len(lines) - unit
        draw.rectangle([x0 - unit // 3, top - unit // 3, x1 + unit // 3, y1 - unit], fill=(0, 0, 0, 150))
        for index, line in enumerate(lines):
            draw.text((width / 2, top + index * int(unit * 1.35)), line, font=_font(unit), fill=colour, anchor="ma")
    return layer


@dataclass(frozen=True)
class AnimaticRenderer:
    """Renders a shot as a moving storyboard frame. Deterministic: same spec, same frames."""

    name: str = "animatic"

    def frames(self, shot: Shot, spec: RenderSpec, heading: str = "", aspect: Fraction | None = None
               ) -> Iterator[np.ndarray]:
        width, height = frame_size(spec, aspect)
        drawing = draw_scene(shot, width, height, heading)
        overlay = _overlay(shot, spec, width, height, heading)
        dw, dh = drawing.size
        pan = _PANS.get(shot.camera_move.value, (0, 0))
        zoom = _ZOOMS.get(shot.camera_move.value, 0)
        last = max(1, spec.num_frames - 1)
        unit = max(9, height // 26)
        clock_at = (width - int(width * _SAFE), height - int(height * _SAFE) - unit // 2)
        for index in range(spec.num_frames):
            t = index / last
            scale = 1.0 - 0.15 * (t if zoom > 0 else 1 - t) if zoom else 1.0
            w, h = width * scale, height * scale
            # Centre, shifted along the pan direction across the spare margin.
            cx = dw / 2 + pan[0] * (t - 0.5) * (dw - w) * 0.9
            cy = dh / 2 + pan[1] * (t - 0.5) * (dh - h) * 0.9
            frame = drawing.resize((width, height), Image.BILINEAR, box=(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            frame = Image.alpha_composite(frame.convert("RGBA"), overlay)
            ImageDraw.Draw(frame).text(clock_at, f"{index / spec.fps:4.1f} s", font=_font(int(unit * 0.8)),
                                       fill=(200, 200, 200, 255), anchor="rs")
            yield np.asarray(frame.convert("RGB"))


def draw_card(shot: Shot, spec: RenderSpec, heading: str = "", aspect: Fraction | None = None) -> Image.Image:
    """The shot's middle frame, as a still (the storyboard's picture before anything is rendered)."""
    middle = spec.model_copy(update={"num_frames": 3})
    return Image.fromarray(list(AnimaticRenderer().frames(shot, middle, heading, aspect))[1])
