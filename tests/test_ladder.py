"""The quality ladder's plain functions: rung specs, the order passes take, the simulated night, the forecast's
rates. (The night itself: tests/test_progressive_night.py and the progressive kill points.)"""

from __future__ import annotations

from datetime import datetime

import pytest

from nightshift.config import RenderDefaults, Settings
from nightshift.forecast import RenderHistory, window_left
from nightshift.ladder import SimJob, ladder_for, level_of, needed_level, pass_order, rung_spec, simulate
from nightshift.schemas import ClipRecord, KeyframeSpec, RenderSpec, spec_sha256


def _spec(shot: str, frames: int = 97, continues: str | None = None) -> RenderSpec:
    keys = [KeyframeSpec(frame_index=0, from_shot=continues)] if continues else []
    return RenderSpec(shot_id=shot, family="wan", model_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers", prompt="a pier at dusk",
                      seed=1, width=1280, height=704, fps=24, num_frames=frames, steps=50, guidance=5.0,
                      duration_s=frames / 24, keyframes=keys)


def test_a_draft_is_the_same_shot_cheaper_and_the_final_hashes_as_before() -> None:
    final = _spec("s01-sh01")
    draft = rung_spec(final, "draft", RenderDefaults())
    assert (draft.steps, draft.width, draft.height, draft.num_frames, draft.seed, draft.prompt) == (
        12, 640, 352, final.num_frames, final.seed, final.prompt)
    assert spec_sha256(draft) != spec_sha256(final)
    assert spec_sha256(final) == spec_sha256(RenderSpec.model_validate(  # a plan made before the ladder
        {k: v for k, v in final.model_dump().items() if k != "rung"}))
    custom = rung_spec(final, "draft", RenderDefaults(draft={"steps": 4, "scale": 0.25}))
    assert (custom.steps, custom.width, custom.height) == (4, 320, 176)


def test_the_ladder_per_renderer_and_strategy() -> None:
    assert ladder_for("diffusers", Settings()) == ["draft", "final"]
    assert ladder_for("animatic", Settings()) == ["final"]
    assert ladder_for("animatic", Settings(render={"draft": {"animatic": True}})) == ["draft", "final"]
    assert ladder_for("comfyui", Settings(night={"strategy": "in_order"})) == ["final"]
    assert ladder_for("diffusers", Settings(night={"rungs": ["animatic", "draft", "final"]})) == [
        "animatic", "draft", "final"]
    with pytest.raises(ValueError, match="ends with final"):
        Settings(night={"rungs": ["final", "draft"]})
    assert level_of("draft", ["final"]) == -1 and level_of("final", ["draft", "final"]) == 1


def test_passes_keep_chains_whole_and_put_marked_shots_first_only_after_the_drafts() -> None:
    specs = [_spec("s01-sh01"), _spec("s01-sh02", continues="s01-sh01"), _spec("s02-sh01"), _spec("s03-sh01")]
    nothing = {s.shot_id: -1 for s in specs}
    assert pass_order(specs, nothing, 0, {"s03-sh01"}) == ["s01-sh01", "s01-sh02", "s02-sh01", "s03-sh01"]
    drafts = {s.shot_id: 0 for s in specs}
    assert pass_order(specs, drafts, 1, {"s03-sh01"}) == ["s03-sh01", "s01-sh01", "s01-sh02", "s02-sh01"]
    assert pass_order(specs, drafts, 1, {"s01-sh02"}) == ["s01-sh01", "s01-sh02", "s02-sh01", "s03-sh01"]
    assert needed_level(drafts, ["draft", "final"]) == 1 and needed_level({"a": 1}, ["draft", "final"]) is None


def test_a_simulated_night_makes_every_shot_watchable_before_any_final() -> None:
    specs = [_spec(f"s01-sh0{i}") for i in range(1, 7)]
    cost = {"draft": 10.0, "final": 100.0}
    night = simulate([SimJob("film", specs, ["draft", "final"])], 265.0, lambda j, s, r: cost[r])
    assert [r for _, _, r, _ in night.steps] == ["draft"] * 6 + ["final"] * 2
    assert night.count("film", ["draft", "final"], "final") == 2 and night.in_cut("film") == 6
    assert night.seconds_waste == pytest.approx(5.0)  # the third final, stopped at the window's end
    in_order = simulate([SimJob("film", specs, ["final"])], 265.0, lambda j, s, r: cost[r])
    assert in_order.in_cut("film") == 0 and in_order.seconds_waiting == pytest.approx(200.0)


def test_rates_come_from_this_machines_history_of_the_same_rung() -> None:
    history = RenderHistory()
    for seconds in (10.0, 11.0, 9.0):
        history.add(ClipRecord(shot_id="s01-sh01", backend="diffusers:wan", animatic=False,
                               model_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers", tier="resident", device="cuda:0",
                               width=3840, height=2160, fps=24, frames=97, steps=50, upscaled_to="4k", file="shots/x",
                               sha256="0" * 64, started="", finished="", seconds=seconds, rung="final",
                               family="wan", render_size=[1280, 704]))
    twice = history.predict("diffusers", _spec("s02-sh01", frames=193), "final", "cuda")
    assert twice.seconds == pytest.approx(20.0, rel=0.02) and "this machine's renders (this rung)" in twice.basis
    assert twice.uncertainty <= 0.2
    fresh = RenderHistory().predict("diffusers", _spec("s02-sh01", frames=121), "final", "cuda")
    assert fresh.seconds == pytest.approx(540.0, rel=0.01) and "RTX 4090" in fresh.basis


def test_the_window_left() -> None:
    settings = Settings(night={"window_start": "22:00", "window_end": "06:00"})
    assert window_left(datetime(2026, 12, 1, 23, 0), settings, True)[0] == 7 * 3600
    assert window_left(datetime(2026, 12, 2, 5, 30), settings, True)[0] == 1800
    assert window_left(datetime(2026, 12, 1, 12, 0), settings, True)[0] == 8 * 3600  # the coming window, whole
