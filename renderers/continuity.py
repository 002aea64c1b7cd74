"""Continuity across a cut: a shot that continues the previous one starts on the last frame that shot rendered.

Every render keeps its last frame, at the size it was rendered, as keyframes/<shot>-end.png. A continuing
shot's first keyframe (`KeyframeSpec.from_shot`) is that image; its clip record keeps the image's sha256, so
when the shot before is rendered again (a new end frame), the continuing shot is no longer done and renders
again too (nightshift/records.py, and the engine's shot loop, which renders a chain in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from nightshift.files import atomic_output, sha256_file
from nightshift.schemas import RenderSpec


def end_frame(keyframes_dir: Path, shot_id: str) -> Path:
    return keyframes_dir / f"{shot_id}-end.png"


def keep_last_frame(frames: Iterable[np.ndarray], target: Path) -> Iterator[np.ndarray]:
    """Pass RGB frames through, one at a time, and save the last one as a PNG once the stream ends."""
    last = None
    for frame in frames:
        last = frame
        yield frame
    if last is not None:
        with atomic_output(target) as tmp:
            Image.fromarray(np.ascontiguousarray(last)).save(tmp, format="PNG")


def continues_from(spec: RenderSpec) -> str | None:
    """The shot this spec starts on the end of, if any."""
    return next((key.from_shot for key in spec.keyframes if key.frame_index == 0 and key.from_shot), None)


def continuity_record(spec: RenderSpec, keyframes_dir: Path) -> dict[str, str | None]:
    """What a clip record keeps of its continuity: the shot, and the sha256 of its end frame as used now."""
    shot = continues_from(spec)
    if shot is None:
        return {}
    frame = end_frame(keyframes_dir, shot)
    return {"continues_from": shot, "continues_frame_sha256": sha256_file(frame) if frame.is_file() else None}
