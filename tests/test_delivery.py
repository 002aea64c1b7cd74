"""Delivery: the cut by stream copy, signing once, a record sealed end to end, the editorial timeline, and
files an editor accepts (colour, layout, timing, labels). Forgeries are made the way an attacker would:
change a file, then rewrite every hash of it that is not under a signature."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest

from nightshift.cli import main
from nightshift.config import Settings
from nightshift.credentials import cut_source_type
from nightshift.delivery import read_manifest
from nightshift.engine import NightEngine
from nightshift.files import sha256_file
from nightshift.inbox import claim
from nightshift.provenance import provenance_digest
from nightshift.renderers.assemble import CutEntry, assemble_cut
from nightshift.renderers.encode import EncodeSettings, encode_frames
from nightshift.renderers.transitions import place_shots
from nightshift.renderers.upscale import UpscaleSettings, upscale_to_4k
from nightshift.schemas import Transition
from nightshift.seal import FINISH_STEPS
from nightshift.signing import create_local_identity, make_signer, read_credentials, sign_detached, sign_video
from nightshift.steps import PROCESS_PROGRESS, Progress
from nightshift.verify import verify_delivery
from tests.conformance import boxes, check_delivery, check_mp4, tools_present

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"
FAST24 = {"fps": 24, "width": 128, "height": 80, "output_width": 320, "output_height": 180}
needs_ffmpeg = pytest.mark.skipif(not tools_present(), reason="Debian's ffmpeg (scripts/setup.sh installs it)")


def _settings(project: Path, render: dict | None = None) -> Settings:
    return Settings(project_dir=project, planner={"kind": "rules"}, render={**FAST24, **(render or {})})


def _deliver(project: Path, script: str = "paper_boat.txt", render: dict | None = None) -> Path:
    (project / "inbox").mkdir(parents=True, exist_ok=True)
    (project / "inbox" / script).write_bytes((CORPUS / script).read_bytes())
    engine = NightEngine(_settings(project, render), renderer="animatic", respect_window=False)
    outcome = engine.run_claim(claim(project / "inbox" / script, project / "inbox").path)
    assert outcome.status == "delivered", outcome.message
    return Path(outcome.delivery)


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _deliver(tmp_path_factory.mktemp("delivery-project"))


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in folder.rglob("*")
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(".")}


def _render_env(monkeypatch: pytest.MonkeyPatch, project: Path | None = None, render: dict | None = None) -> None:
    """`nightshift render` as the user runs it: in the delivery's project, with the sizes it was made with."""
    for key, value in {**FAST24, **(render or {})}.items():
        monkeypatch.setenv(f"NIGHTSHIFT_RENDER__{key.upper()}", str(value))
    if project is not None:
        monkeypatch.chdir(project)


def _project(delivery: Path) -> Path:
    return delivery.parents[2]  # <project>/output/<date>/<slug>


def _edit_shotlist(folder: Path, change) -> None:  # noqa: ANN001
    data = json.loads((folder / "shotlist.json").read_text())
    change(data)
    (folder / "shotlist.json").write_text(json.dumps(data, indent=2))


# --------------------------------------------------------------------------- assembly by stream copy


def _moving(count: int, shade: int) -> list[np.ndarray]:
    frames = []
    for index in range(count):
        frame = np.full((64, 96, 3), shade, np.uint8)
        frame[:, (index * 3) % 96] = 255  # a bar that moves, so every frame differs
        frame[(index * 2) % 64, :, 2] = 200
        frames.append(frame)
    return frames


def _finished_shots(tmp_path: Path, lengths: tuple[int, ...], encode: EncodeSettings = EncodeSettings(),
                    fps: float = 24) -> list[Path]:
    """Shots made the way every renderer finishes them: a native encode, then the upscale that encodes for delivery."""
    shots = []
    for number, count in enumerate(lengths):
        native, final = tmp_path / f"native{number}.mp4", tmp_path / f"shot{number}.mp4"
        encode_frames(_moving(count, 40 + 50 * number), native, fps)
        upscale_to_4k(native, final, UpscaleSettings(width=192, height=128), encode)
        shots.append(final)
    return shots


def _planes(path: Path) -> list[tuple[int, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(frame.pts, frame.to_ndarray().astype(np.float64)) for frame in container.decode(video=0)]


def test_cut_copies_every_frame_outside_transitions_and_decodes_like_a_full_encode(tmp_path: Path) -> None:
    shots = _finished_shots(tmp_path, (40, 30, 50, 20))
    transitions = [Transition.crossfade, Transition.fade_out, Transition.fade_in, Transition.cut]
    report = assemble_cut([CutEntry(s, t) for s, t in zip(shots, transitions)], tmp_path / "cut.mp4")
    layout = place_shots([40, 30, 50, 20], transitions, Fraction(24))
    assert report.frames == layout[-1].end == 140 - 12 and report.reencoded_because is None
    assert report.encoded_frames == 12 + 18 + 18 and report.copied_frames == report.frames - 48
    # What a full re-encode would encode: each shot's decoded frames, blended where a transition is.
    decoded = [[planes for _, planes in _planes(s)] for s in shots]
    black = np.full_like(decoded[0][0], 128.0)
    black[:128] = 16.0
    expected, blended = [], set()
    for number, place in enumerate(layout):
        for frame in range(place.head, place.frames):
            into_tail = frame - (place.frames - place.tail)
            if frame < place.fades_in:
                blended.add(len(expected))
                weight = (frame + 1) / place.fades_in
                expected.append(decoded[number][frame] * weight + black * (1 - weight))
            elif place.tail and into_tail >= 0:
                blended.add(len(expected))
                if place.leaves_by is Transition.crossfade:
                    weight = (into_tail + 1) / (place.tail + 1)
                    expected.append(decoded[number][frame] * (1 - weight) + decoded[number + 1][into_tail] * weight)
                else:
                    weight = (into_tail + 1) / place.tail
                    expected.append(decoded[number][frame] * (1 - weight) + black * weight)
            else:
                expected.append(decoded[number][frame])
    cut = _planes(tmp_path / "cut.mp4")
    tick = 12288 // 24  # the track timescale counts whole frames
    assert [pts for pts, _ in cut] == [index * tick for index in range(len(expected))]
    for index, ((_, got), want) in enumerate(zip(cut, expected)):
        if index in blended:
            psnr = 10 * np.log10(255 ** 2 / max(np.mean((got - want) ** 2), 1e-9))
            assert psnr > 38, f"transition frame {index}: {psnr:.1f} dB"
        else:
            assert np.array_equal(got, want), f"copied frame {index} is not the shot's own"
    with av.open(str(tmp_path / "cut.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.duration * stream.time_base == Fraction(len(expected), 24)


@needs_ffmpeg
@pytest.mark.parametrize("fps", [24, 23.976, 25])
def test_shots_and_their_cut_have_exact_timing_at_film_and_video_rates(tmp_path: Path, fps: float) -> None:
    shots = _finished_shots(tmp_path, (37, 29, 41), fps=fps)
    transitions = [Transition.crossfade, Transition.fade_out, Transition.cut]
    report = assemble_cut([CutEntry(s, t) for s, t in zip(shots, transitions)], tmp_path / "cut.mp4")
    for shot, frames in zip(shots, (37, 29, 41)):
        assert check_mp4(shot, frames, "h264") == []
    assert check_mp4(tmp_path / "cut.mp4", report.frames, "h264") == []  # constant steps across every join


def test_a_cuts_only_film_is_the_shots_packets_unchanged(tmp_path: Path) -> None:
    shots = _finished_shots(tmp_path, (30, 25, 40))
    report = assemble_cut([CutEntry(s, Transition.cut) for s in shots], tmp_path / "cut.mp4")
    assert report.encoded_frames == 0 and report.runs == 0

    def payloads(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(video=0) if p.pts is not None]

    assert payloads(tmp_path / "cut.mp4") == [packet for shot in shots for packet in payloads(shot)]


def test_a_cut_re_uses_transition_runs_and_follows_the_codec_setting(tmp_path: Path) -> None:
    shots = _finished_shots(tmp_path, (30, 30))
    entries = [CutEntry(shots[0], Transition.crossfade), CutEntry(shots[1], Transition.cut)]
    assert assemble_cut(entries, tmp_path / "a.mp4").runs_reused == 0
    assert assemble_cut(entries, tmp_path / "a.mp4").runs_reused == 1  # the same inputs: the run is cached
    hevc = assemble_cut(entries, tmp_path / "b.mp4", EncodeSettings(codec="libx265", preset="ultrafast"))
    assert hevc.reencoded_because and "hevc" in hevc.reencoded_because
    with av.open(str(tmp_path / "b.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "hevc"


# --------------------------------------------------------------------------- signing once, re-cutting


def test_re_rendering_one_shot_changes_only_that_shot_the_cut_and_the_records(
        delivery: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _render_env(monkeypatch, _project(delivery))
    folder = _copy(delivery, tmp_path)
    before = _hashes(folder)
    target = read_manifest(folder).clips[1]
    _edit_shotlist(folder, lambda data: data["shots"][1].update(action="The boat capsizes in the gutter."))
    assert main(["render", str(folder), "--renderer", "animatic"]) == 0
    after = _hashes(folder)
    changed = {path for path in before if after.get(path) != before[path]}
    records = {"renders.json", "renderplan.json", "shotlist.json", "shotlist.md", "manifest.json", "manifest.jws",
               "manifest.md",
               "provenance/edits.json", "provenance/shotlist.last.json", "paper-boat.mp4", "paper-boat.otio",
               "paper-boat.edl", "paper-boat.xml", "storyboard.pdf"}
    own = {target.file, f"keyframes/{target.shot_id}-end.png"}  # the shot and its end frame (for continuity)
    assert target.file in changed and changed <= records | own
    others = [c.file for c in read_manifest(folder).clips if c.file != target.file]
    assert all(after[path] == before[path] for path in others)  # signed once: never signed again
    assert verify_delivery(folder).ok


def test_a_new_transition_re_cuts_without_re_rendering(delivery: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _render_env(monkeypatch, _project(delivery))
    folder = _copy(delivery, tmp_path)
    shots_before = {c.file: sha256_file(folder / c.file) for c in read_manifest(folder).clips}

    def transitions(data: dict) -> None:
        data["shots"][0]["transition"] = "crossfade"
        data["shots"][-1]["transition"] = "fade out"

    _edit_shotlist(folder, transitions)
    assert main(["render", str(folder), "--renderer", "animatic"]) == 0
    manifest = read_manifest(folder)
    assert {c.file: sha256_file(folder / c.file) for c in manifest.clips} == shots_before
    assert manifest.cut.frames == sum(c.frames for c in manifest.clips) - 12
    assert manifest.cut.encoded_frames == 12 + 18 and manifest.cut.transition_runs == 2
    assert "no shot re-rendered" in manifest.history[-1] and verify_delivery(folder).ok


def test_a_delivery_is_not_re_rendered_under_another_identity(delivery: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    _render_env(monkeypatch, tmp_path)  # not the delivery's project: it would sign with another identity
    folder = _copy(delivery, tmp_path)
    before = _hashes(folder)
    assert main(["render", str(folder), "--renderer", "animatic"]) == 1
    assert "run nightshift from the project that made the delivery" in capsys.readouterr().err
    assert _hashes(folder) == before


def test_render_shots_on_a_plan_with_missing_shots_names_them_and_makes_no_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _render_env(monkeypatch)
    out = tmp_path / "plan"
    assert main(["plan", str(CORPUS / "paper_boat.txt"), "--planner", "rules", "--out", str(out)]) == 0
    ids = [s["shot_id"] for s in json.loads((out / "renderplan.json").read_text())["specs"]]
    assert main(["render", str(out), "--shots", ids[0], "--renderer", "animatic"]) == 0
    err = capsys.readouterr().err
    assert f"no cut: shots {', '.join(ids[1:])} are not rendered yet" in err
    assert not (out / "paper-boat.mp4").exists() and not (out / "paper-boat.otio").exists()
    assert (out / "shots" / f"{ids[0]}.mp4").is_file()


def test_progress_runs_through_assembly_signing_and_sealing(tmp_path: Path) -> None:
    events: list[Progress] = []
    with PROCESS_PROGRESS.listening(events.append):
        _deliver(tmp_path / "project")
    stages = [e.stage for e in events]
    assert stages[0] == "rendering shots" and stages[-1] == "delivered"
    assert [s for s in FINISH_STEPS if s in stages] == list(FINISH_STEPS)
    last_shot = max(i for i, e in enumerate(events) if e.stage == "rendering shots")
    assert events[last_shot].percent < 100 and events[-1].percent == 100
    assert all(a.done <= b.done for a, b in zip(events, events[1:]))


# --------------------------------------------------------------------------- the sealed record and forgeries


def _forge_manifest(folder: Path, change) -> None:  # noqa: ANN001
    """Rewrite manifest.json as an attacker would: apply `change`, then make every unsigned hash agree."""
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    for output in data["outputs"]:
        path = folder / output["path"]
        if path.is_file():
            output["sha256"], output["bytes"] = sha256_file(path), path.stat().st_size
    data["outputs"] = [o for o in data["outputs"] if (folder / o["path"]).is_file()]
    for shot in data["shots"]:
        shot["clip"]["sha256"] = sha256_file(folder / shot["clip"]["file"])
    data["provenance_sha256"] = provenance_digest(data)
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))


def _problems(folder: Path, trust: Path | None = None) -> str:
    report = verify_delivery(folder, trust)
    assert not report.ok, report.text()
    return "\n".join(report.problems)


def test_a_replaced_script_copy_fails_even_with_its_hashes_rewritten(delivery: Path, tmp_path: Path) -> None:
    folder = _copy(delivery, tmp_path)
    script = folder / "provenance" / "script.txt"
    script.write_text("A different story altogether.\n")

    def rewrite(data: dict) -> None:
        data["inputs"]["script"]["sha256"] = sha256_file(script)

    _forge_manifest(folder, rewrite)
    problems = _problems(folder)
    assert "manifest.json does not match its signature in manifest.jws" in problems
    assert "provenance/script.txt: changed since signing" in problems


def test_a_deleted_edit_history_fails_even_with_the_record_rewritten(delivery: Path, tmp_path: Path) -> None:
    folder = _copy(delivery, tmp_path)
    (folder / "provenance" / "edits.json").unlink()

    def rewrite(data: dict) -> None:
        data["edits"], data["planning"]["edit_history"] = [], None

    _forge_manifest(folder, rewrite)
    problems = _problems(folder)
    assert "provenance/edits.json: missing, though paper-boat.mp4's signed credentials list it" in problems
    assert "manifest.jws" in problems


def test_a_shot_signed_by_another_ca_with_our_assertion_copied_fails(delivery: Path, tmp_path: Path) -> None:
    folder = _copy(delivery, tmp_path)
    shot = read_manifest(folder).clips[0]
    genuine = read_credentials(folder / shot.file)
    other = create_local_identity(tmp_path / "other-signing", owner="Nightshift user")
    forged = tmp_path / "forged.mp4"
    encode_frames(_moving(shot.frames, 90), forged, 24)
    definition = {"claim_generator_info": [{"name": "Nightshift", "version": "0.1.0"}], "title": "forged",
                  "format": "video/mp4", "assertions": [
                      {"label": "c2pa.actions.v2", "data": {"actions": genuine.actions}},
                      {"label": "org.nightshift.provenance", "data": genuine.nightshift}]}
    sign_video(forged, definition, make_signer(other))
    shutil.copyfile(forged, folder / shot.file)
    _forge_manifest(folder, lambda data: None)
    problems = _problems(folder)
    assert f"{shot.file}: signed by CN=Nightshift signer, O=Nightshift user (issued by CN=Nightshift local CA" in problems
    assert "not by the delivery's signer" in problems


def test_a_record_naming_a_file_outside_the_delivery_is_not_read(delivery: Path, tmp_path: Path) -> None:
    folder = _copy(delivery, tmp_path)
    (tmp_path / "secret.txt").write_text("not the delivery's")

    def rewrite(data: dict) -> None:
        data["planning"]["exchanges"].append({"path": "../secret.txt", "sha256": "0" * 64, "bytes": 1})

    _forge_manifest(folder, rewrite)
    assert "../secret.txt: a planner exchange the record names lies outside the delivery" in _problems(folder)


def test_trust_names_whose_ca_signed(delivery: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    own_ca = _project(delivery) / ".nightshift" / "signing" / "local-ca.pem"
    assert main(["verify", str(delivery), "--trust", str(own_ca)]) == 0
    assert "the signer is issued by the CA you trust" in capsys.readouterr().out
    stranger = create_local_identity(tmp_path / "stranger")
    assert "is not issued by the CA you trust" in _problems(delivery, stranger.chain.parent / "local-ca.pem")
    # Everything re-signed by the stranger, manifest included: consistent, so only --trust tells.
    folder = _copy(delivery, tmp_path)
    sign_detached(folder / "manifest.json", stranger)
    assert "manifest.json is signed by" in verify_delivery(folder).text()
    assert "not by the delivery's signer" in _problems(folder)  # the MP4s are still ours: two identities


# --------------------------------------------------------------------------- the editorial timeline


@pytest.fixture(scope="module")
def transitions_delivery(delivery: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = _copy(delivery, tmp_path_factory.mktemp("transitions"))

    def transitions(data: dict) -> None:
        data["shots"][0]["transition"] = "crossfade"
        data["shots"][-1]["transition"] = "fade out"

    _edit_shotlist(folder, transitions)
    with pytest.MonkeyPatch.context() as patch:
        _render_env(patch, _project(delivery))
        assert main(["render", str(folder), "--renderer", "animatic"]) == 0
    return folder


@pytest.mark.parametrize("suffix", [".otio", ".edl", ".xml"])
def test_timeline_reads_back_with_every_shot_in_order(transitions_delivery: Path, suffix: str) -> None:
    manifest = read_manifest(transitions_delivery)
    timeline = otio.adapters.read_from_file(str(transitions_delivery / f"paper-boat{suffix}"))
    track = timeline.video_tracks()[0]
    clips = [c for c in track.find_clips() if not isinstance(c.media_reference, otio.schema.GeneratorReference)]
    assert [c.name for c in clips] == [c.shot_id for c in manifest.clips]
    assert track.duration().to_frames() == manifest.cut.frames and track.duration().rate == 24
    assert all(c.source_range.duration.rate == 24 for c in clips)
    assert len([item for item in track if isinstance(item, otio.schema.Transition)]) >= 1
    visible = [c.source_range.duration.to_frames() for c in clips]
    assert sum(visible) <= manifest.cut.frames and all(v > 0 for v in visible)
    if suffix == ".otio":  # our own format keeps everything: handles, metadata, markers
        assert [item.name for item in track if isinstance(item, otio.schema.Transition)] == ["crossfade", "fade out"]
        for clip, shot in zip(clips, manifest.shots):
            assert clip.media_reference.target_url == shot.clip.file
            assert clip.metadata["nightshift"] == {"shot_id": shot.spec.shot_id, "prompt": shot.spec.prompt,
                                                   "seed": shot.spec.seed, "model": "animatic",
                                                   "transition": clip.metadata["nightshift"]["transition"]}
        scenes = {shot["scene"] for shot in json.loads((transitions_delivery / "shotlist.json").read_text())["shots"]}
        assert sum(len(c.markers) for c in clips) == len(scenes)  # a marker where each scene starts


# --------------------------------------------------------------------------- files an editor accepts


@needs_ffmpeg
def test_colour_patches_decode_true_with_an_independent_decoder(tmp_path: Path) -> None:
    patches = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (128, 128, 128), (224, 172, 140)]
    frame = np.zeros((64, 16 * len(patches), 3), np.uint8)
    for index, colour in enumerate(patches):
        frame[:, 16 * index:16 * (index + 1)] = colour
    native, final = tmp_path / "native.mp4", tmp_path / "final.mp4"
    encode_frames([frame] * 6, native, 24)
    upscale_to_4k(native, final, UpscaleSettings(width=16 * len(patches) * 2, height=128))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(final), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(128, 16 * len(patches) * 2, 3)
    for index, colour in enumerate(patches):
        centre = decoded[64, 32 * index + 16].astype(int)
        assert np.abs(centre - colour).max() <= 4, f"{colour} decodes as {tuple(centre)}"
    yuv = subprocess.run(["ffmpeg", "-v", "error", "-i", str(final), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "yuv444p", "-"], capture_output=True, check=True).stdout
    planes = np.frombuffer(yuv, np.uint8).reshape(3, 128, 16 * len(patches) * 2)
    assert np.abs(planes[:, 64, 48].astype(int) - (173, 42, 26)).max() <= 2  # green, BT.709 limited range
    assert check_mp4(final, 6, "h264") == []  # tagged BT.709 in stream and container, moov first, exact timing


@needs_ffmpeg
def test_every_file_is_web_ready_signed_and_conformant(delivery: Path) -> None:
    for mp4 in sorted(delivery.rglob("*.mp4")):
        if mp4.relative_to(delivery).as_posix().startswith("."):
            continue
        top = boxes(mp4)["top"]
        assert top.index("moov") < top.index("mdat"), f"{mp4.name}: {top}"
        assert read_credentials(mp4).ok
    assert check_delivery(delivery) == [] and verify_delivery(delivery).ok


def test_labels_follow_what_made_each_file(delivery: Path) -> None:
    manifest = read_manifest(delivery)
    cut = read_credentials(delivery / "paper-boat.mp4")
    assert cut.actions[0]["digitalSourceType"].endswith("/algorithmicMedia")  # every shot an animatic
    assert manifest.cut.digital_source_type == "algorithmicMedia"
    animatic, model = manifest.clips[0], manifest.clips[0].model_copy(update={"animatic": False})
    assert cut_source_type([model, model]) == "trainedAlgorithmicMedia"
    assert cut_source_type([animatic, model]) == "compositeWithTrainedAlgorithmicMedia"


@needs_ffmpeg
def test_an_hevc_studio_gets_hevc_shots_and_an_hevc_cut(tmp_path: Path) -> None:
    folder = _deliver(tmp_path / "project", render={"codec": "libx265", "preset": "ultrafast"})
    manifest = read_manifest(folder)
    for clip in manifest.clips:
        with av.open(str(folder / clip.file)) as container:
            assert container.streams.video[0].codec_context.name == "hevc"
            assert container.streams.video[0].codec_tag == "hvc1"
    with av.open(str(folder / "paper-boat.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "hevc"
    assert manifest.cut.encode_settings["codec"] == "libx265" and manifest.cut.reencoded_because is None
    assert check_delivery(folder) == [] and verify_delivery(folder).ok
