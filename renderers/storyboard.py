"""storyboard.pdf: each scene's shots as frames on 16:9 pages, to read on paper or a tablet.

A frame is the shot's first keyframe where it has one, else the middle frame of its rendered clip,
else its animatic card (a plan folder before any render). Under each frame: the shot id, framing,
camera move, length, and the line spoken. Every scene starts a page. Pages are drawn with Pillow
and written as one PDF by Pillow's PDF writer.
"""

from __future__ import annotations

import textwrap
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont

from nightshift.files import atomic_output
from nightshift.renderers.animatic import draw_card
from nightshift.schemas import RenderPlan, RenderSpec, Shot, ShotList

STORYBOARD_PDF = "storyboard.pdf"
PAGE_W, PAGE_H = 1920, 1080
COLUMNS, ROWS = 3, 2
MARGIN, GUTTER, HEADER = 60, 36, 110
TEXT_UNDER = 150  # the panel's caption, under its frame
PANEL_W = (PAGE_W - 2 * MARGIN - (COLUMNS - 1) * GUTTER) // COLUMNS
FRAME_H = PANEL_W * 9 // 16
TEXT_LIMIT = 400  # characters of action or dialogue a panel shows


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(image: Image.Image) -> Image.Image:
    """The picture letterboxed into a 16:9 frame of the panel's width."""
    frame = Image.new("RGB", (PANEL_W, FRAME_H), (0, 0, 0))
    picture = image.convert("RGB")
    picture.thumbnail((PANEL_W, FRAME_H), Image.LANCZOS)
    frame.paste(picture, ((PANEL_W - picture.width) // 2, (FRAME_H - picture.height) // 2))
    return frame


def _clip_middle(clip: Path, frames: int) -> Image.Image | None:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        target = frames // 2
        container.seek(int(target / rate / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is not None and frame.pts * stream.time_base * rate >= target:
                return frame.to_image()
    return None


def shot_picture(folder: Path, shot: Shot, spec: RenderSpec, heading: str = "") -> Image.Image:
    for keyframe in (folder / "keyframes" / f"{shot.id}-first.png",
                     folder / shot.first_frame_image if shot.first_frame_image else None):
        if keyframe is not None and keyframe.is_file():
            return _fit(Image.open(keyframe))
    clip = folder / "shots" / f"{shot.id}.mp4"
    if clip.is_file():
        picture = _clip_middle(clip, spec.num_frames)
        if picture is not None:
            return _fit(picture)
    short = shot.model_copy(update={"action": shot.action[:TEXT_LIMIT], "dialogue": (shot.dialogue or "")[:TEXT_LIMIT]})
    return _fit(draw_card(short, spec.model_copy(update={"width": PANEL_W}), heading, Fraction(16, 9)))


def _panel(page: ImageDraw.ImageDraw, canvas: Image.Image, x: int, y: int, shot: Shot, spec: RenderSpec,
           picture: Image.Image) -> None:
    canvas.paste(picture, (x, y))
    page.rectangle([x - 1, y - 1, x + PANEL_W, y + FRAME_H], outline=(60, 60, 60), width=2)
    line_y = y + FRAME_H + 10
    seconds = spec.num_frames / spec.fps
    page.text((x, line_y), f"{shot.id}   {shot.framing.value} / {shot.camera_move.value} / {seconds:.1f} s",
              font=_font(24), fill=(20, 20, 20))
    line_y += 34
    columns = PANEL_W // 12
    for text, colour in ((shot.action, (60, 60, 60)), (shot.dialogue or "", (20, 70, 140))):
        for line in textwrap.wrap(text[:TEXT_LIMIT], columns)[:2]:
            page.text((x, line_y), line, font=_font(20), fill=colour)
            line_y += 26


def write_storyboard(folder: Path, shotlist: ShotList, plan: RenderPlan) -> Path:
    """<folder>/storyboard.pdf from the folder's shot list, with the best picture each shot has so far."""
    specs = {spec.shot_id: spec for spec in plan.specs}
    headings = {scene.number: scene.heading for scene in shotlist.scenes}
    pages: list[Image.Image] = []
    per_page = COLUMNS * ROWS
    for number in dict.fromkeys(shot.scene for shot in shotlist.shots):
        shots = [shot for shot in shotlist.shots if shot.scene == number and shot.id in specs]
        for first in range(0, len(shots), per_page):
            canvas = Image.new("RGB", (PAGE_W, PAGE_H), (250, 250, 247))
            page = ImageDraw.Draw(canvas)
            more = " (continued)" if first else ""
            page.text((MARGIN, 30), f"{shotlist.title[:80]}", font=_font(28), fill=(110, 110, 110))
            page.text((MARGIN, 64), f"Scene {number}: {headings.get(number, '')[:90]}{more}", font=_font(32),
                      fill=(20, 20, 20))
            for index, shot in enumerate(shots[first:first + per_page]):
                x = MARGIN + (index % COLUMNS) * (PANEL_W + GUTTER)
                y = HEADER + (index // COLUMNS) * (FRAME_H + TEXT_UNDER)
                picture = shot_picture(folder, shot, specs[shot.id], headings.get(number, ""))
                _panel(page, canvas, x, y, shot, specs[shot.id], picture)
            pages.append(canvas)
    final = folder / STORYBOARD_PDF
    with atomic_output(final) as tmp:
        pages[0].save(tmp, "PDF", save_all=True, append_images=pages[1:], resolution=144.0,
                      title=f"{shotlist.title[:80]}: storyboard", producer="Nightshift")
    return final
