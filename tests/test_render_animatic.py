"""Animatic rendering, streaming 4K upscale, encode and assembly, decoded back with PyAV."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from nightshift.cli import main
from nightshift.files import sha256_file
from nightshift.renderers.encode import EncodeSettings, encode_frames, exact_rate, probe
from nightshift.renderers.upscale import UpscaleSettings, upscale_to_4k


def _frames(count: int, width: int = 64, height: int = 48):
    for index in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : (index * 3) % width] = 200
        yield frame


def test_exact_rates() -> None:
    assert exact_rate(23.976) == Fraction(24000, 1001) and exact_rate(29.97) == Fraction(30000, 1001)
    assert exact_rate(24.0) == 24 and exact_rate(16) == 16


@pytest.mark.parametrize("fps", [24.0, 23.976, 16.0])
def test_encode_then_upscale_keeps_frames_and_rate(tmp_path: Path, fps: float) -> None:
    native = tmp_path / "native.mp4"
    assert encode_frames(_frames(17), native, fps) == 17
    final = tmp_path / "clip-4k.mp4"
    assert upscale_to_4k(native, final, UpscaleSettings(sharpen=0.4)) == 17
    info = probe(final)
    assert (info.width, info.height, info.frames, info.codec) == (3840, 2160, 17, "h264")
    assert info.fps == exact_rate(fps)
    assert info.duration_s == pytest.approx(17 / float(exact_rate(fps)))
    assert not list(tmp_path.glob(".*partial*"))


def test_crop_and_hevc(tmp_path: Path) -> None:
    native = tmp_path / "native.mp4"
    encode_frames(_frames(5), native, 24)
    final = tmp_path / "crop.mp4"
    upscale_to_4k(native, final, UpscaleSettings(width=640, height=360, fit="crop"), EncodeSettings(codec="libx265", preset="ultrafast"))
    info = probe(final)
    assert (info.width, info.height, info.frames, info.codec) == (640, 360, 5, "hevc")


def test_failed_encode_leaves_no_file(tmp_path: Path) -> None:
    def broken():
        yield np.zeros((48, 64, 3), np.uint8)
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError):
        encode_frames(broken(), tmp_path / "clip.mp4", 24)
    assert list(tmp_path.iterdir()) == []


def test_render_plan_as_animatic_and_rerender_one_shot(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    assert main(["plan", str(corpus / "paper_boat.txt"), "--planner", "rules", "--out", str(out)]) == 0
    # Short shots keep the test quick: edit durations the way a user would, then rebuild the plan.
    data = json.loads((out / "shotlist.json").read_text())
    for shot in data["shots"]:
        shot["duration_s"] = 0.4
    data["shots"][0]["transition"] = "crossfade"
    (out / "shotlist.json").write_text(json.dumps(data))
    assert main(["plan", "--from-shotlist", str(out / "shotlist.json")]) == 0
    plan = json.loads((out / "renderplan.json").read_text())
    assert main(["render", str(out)]) == 0
    records = json.loads((out / "renders.json").read_text())["clips"]
    assert [r["shot_id"] for r in records] == [s["shot_id"] for s in plan["specs"]]
    total = 0
    for record, spec in zip(records, plan["specs"]):
        assert record["animatic"] is True and record["backend"] == "animatic"
        clip = out / record["file"]
        info = probe(clip)
        assert (info.width, info.height, info.frames) == (3840, 2160, spec["num_frames"])
        assert info.fps == exact_rate(spec["fps"]) and record["sha256"] == sha256_file(clip)
        total += spec["num_frames"]
    cut = probe(out / "paper-boat.mp4")
    overlap = round(0.5 * 24)
    assert (cut.width, cut.height) == (3840, 2160)
    assert cut.frames == total - min(overlap, plan["specs"][1]["num_frames"])  # one crossfade overlaps

    untouched = {r["shot_id"]: r["sha256"] for r in records[1:]}
    first_before = (out / records[0]["file"]).stat().st_mtime_ns
    assert main(["render", str(out), "--shots", records[0]["shot_id"]]) == 0
    again = json.loads((out / "renders.json").read_text())["clips"]
    assert {r["shot_id"]: r["sha256"] for r in again[1:]} == untouched
    assert (out / records[0]["file"]).stat().st_mtime_ns != first_before
    assert not list(out.rglob("*.partial.mp4")) and not (out / ".work").exists()

    # Nothing changed: a plain render re-renders nothing.
    started = {r["shot_id"]: r["started"] for r in again}
    assert main(["render", str(out)]) == 0
    assert {r["shot_id"]: r["started"] for r in json.loads((out / "renders.json").read_text())["clips"]} == started
    # An edited shot list re-renders exactly the shot whose spec changed.
    data = json.loads((out / "shotlist.json").read_text())
    data["shots"][1]["action"] = "The boat capsizes in a sudden gust."
    (out / "shotlist.json").write_text(json.dumps(data))
    assert main(["render", str(out)]) == 0
    after = {r["shot_id"]: r["started"] for r in json.loads((out / "renders.json").read_text())["clips"]}
    changed = [shot_id for shot_id in after if after[shot_id] != started[shot_id]]
    assert changed == [data["shots"][1]["id"]]


def test_unknown_shot_is_a_clear_error(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "plan"
    main(["plan", str(corpus / "paper_boat.txt"), "--planner", "rules", "--out", str(out)])
    assert main(["render", str(out), "--shots", "s09-sh09"]) == 1
    assert "no shot s09-sh09" in capsys.readouterr().err


def _rms_by_second(path: Path) -> tuple[list[float], int]:
    import av

    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return [float(np.sqrt(np.mean(samples[:, i:i + rate] ** 2))) for i in range(0, samples.shape[1] - rate + 1, rate)], rate


@pytest.mark.parametrize("transition", ["cut", "crossfade"])
def test_cut_keeps_each_shots_sound_in_place(tmp_path: Path, transition: str) -> None:
    from nightshift.schemas import Transition
    from nightshift.renderers.assemble import CutEntry, assemble_cut

    rate, seconds = 16000, 1.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate).astype(np.float32)
    clips = []
    for name, sound in (("a", np.stack([tone, tone])), ("b", None), ("c", np.stack([tone, tone]))):
        clip = tmp_path / f"{name}.mp4"
        encode_frames(_frames(24), clip, 24, audio=sound, sample_rate=rate if sound is not None else None)
        clips.append(clip)
    cut = tmp_path / "cut.mp4"
    frames = assemble_cut([CutEntry(c, Transition(transition)) for c in clips], cut).frames
    info = probe(cut)
    assert info.has_audio and info.audio_codec == "aac" and info.audio_rate == rate
    assert info.frames == frames == (72 if transition == "cut" else 72 - 2 * 12)
    assert info.audio_duration_s == pytest.approx(info.duration_s, abs=0.07)  # AAC pads up to one 1024-sample frame
    if transition == "cut":
        loudness, _ = _rms_by_second(cut)
        assert loudness[0] > 0.2 and loudness[1] < 0.01 and loudness[2] > 0.2  # tone, silence under b, tone


def test_silent_shots_make_a_silent_cut(tmp_path: Path) -> None:
    from nightshift.schemas import Transition
    from nightshift.renderers.assemble import CutEntry, assemble_cut

    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for clip in clips:
        encode_frames(_frames(6), clip, 24)
    assemble_cut([CutEntry(c, Transition.cut) for c in clips], tmp_path / "cut.mp4")
    assert not probe(tmp_path / "cut.mp4").has_audio


def test_the_animatic_is_a_storyboard_in_motion_at_the_delivery_aspect() -> None:
    from fractions import Fraction

    from nightshift.renderers.animatic import AnimaticRenderer
    from nightshift.schemas import CameraMove, Framing, RenderSpec, Shot

    def shot(framing: Framing, move: CameraMove, characters: list[str]) -> Shot:
        return Shot(id="s01-sh01", scene=1, framing=framing, camera_move=move, characters=characters,
                    action="Mara climbs the stair.", first_frame="a", last_frame="b", duration_s=1.0,
                    dialogue="MARA: Not tonight.")

    spec = RenderSpec(shot_id="s01-sh01", family="ltx", model_id="m", prompt="p", seed=1, steps=1, guidance=1.0,
                      width=320, height=213,
                      fps=8, num_frames=8, duration_s=1.0)
    heading = "EXT. LIGHTHOUSE - NIGHT"
    pan = list(AnimaticRenderer().frames(shot(Framing.wide, CameraMove.pan_right, ["MARA"]), spec, heading,
                                         Fraction(16, 9)))
    assert pan[0].shape == (180, 320, 3)  # the spec's width at 16:9: nothing to pillarbox
    band = slice(0, int(180 * 0.05) + 30)  # the header inside the title-safe area
    assert np.array_equal(pan[0][band], pan[-1][band])  # the text stays still ...
    assert not np.array_equal(pan[0][60:140], pan[-1][60:140])  # ... while the camera moves the drawing
    figure = np.array([196, 186, 170])

    def figure_share(framing: Framing) -> float:
        frame = next(AnimaticRenderer().frames(shot(framing, CameraMove.static, ["MARA"]), spec, heading,
                                               Fraction(16, 9)))
        return float(np.mean(np.all(np.abs(frame.astype(int) - figure) < 12, axis=2)))

    assert figure_share(Framing.wide) < figure_share(Framing.medium) < figure_share(Framing.close)
