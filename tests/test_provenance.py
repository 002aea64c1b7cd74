"""Provenance: manifest.json and its schema, C2PA credentials, verify against tampering, edit history, reproduce."""

from __future__ import annotations

import json
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import jsonschema
import pytest

from nightshift.engine import NightEngine
from nightshift.cli import main
from nightshift.config import Settings
from nightshift.delivery import read_manifest
from nightshift.errors import NightshiftError
from nightshift.inbox import claim
from nightshift.provenance import MANIFEST_SCHEMA, Manifest, manifest_schema, provenance_digest
from nightshift.seal import seal_delivery
from nightshift.signing import (CA_FILE, CHAIN_FILE, KEY_FILE, SIGNING_DIR, SigningError, read_credentials,
                                signing_identity)
from nightshift.verify import verify_delivery

FAST = {"fps": 8, "width": 256, "height": 160, "output_width": 640, "output_height": 360}


def _deliver(project: Path, corpus: Path, script: str, renderer: str, render: dict | None = None) -> Path:
    """A delivery made by the engine with its plain steps (no Prefect): claim, plan, render, deliver."""
    (project / "inbox").mkdir(parents=True, exist_ok=True)
    settings = Settings(project_dir=project, planner={"kind": "rules"}, render={**FAST, **(render or {})})
    (project / "inbox" / script).write_bytes((corpus / script).read_bytes())
    engine = NightEngine(settings, renderer=renderer, respect_window=False)
    outcome = engine.run_claim(claim(project / "inbox" / script, project / "inbox").path)
    assert outcome.status == "delivered", outcome.message
    return Path(outcome.delivery)


@pytest.fixture(scope="module")
def animatic_delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = Path(__file__).resolve().parent.parent / "examples" / "corpus"
    return _deliver(tmp_path_factory.mktemp("animatic-project"), corpus, "paper_boat.txt", "animatic")


@pytest.fixture(scope="module")
def diffusers_delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nightshift.renderers.tiny_models import build_ltx

    corpus = Path(__file__).resolve().parent.parent / "examples" / "corpus"
    model = build_ltx(tmp_path_factory.mktemp("tiny-ltx") / "ltx")
    render = {"family": "ltx", "model_id": str(model), "width": 32, "height": 32, "steps": 2, "guidance": 1.0,
              "device": "cpu", "quantization": "none"}
    return _deliver(tmp_path_factory.mktemp("diffusers-project"), corpus, "paper_boat.txt", "diffusers", render)


def _copy(delivery: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(delivery, tmp_path / delivery.name))


def _problems(folder: Path) -> list[str]:
    report = verify_delivery(folder)
    assert not report.ok
    return report.problems


# --------------------------------------------------------------------------- the record


def test_manifest_round_trips_through_its_schema(animatic_delivery: Path) -> None:
    text = (animatic_delivery / "manifest.json").read_text()
    manifest = Manifest.model_validate_json(text)
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest
    jsonschema.Draft202012Validator(json.loads(manifest_schema())).validate(json.loads(text))
    assert (animatic_delivery / MANIFEST_SCHEMA).read_text() == manifest_schema()
    assert manifest.manifest_version == "4" and provenance_digest(json.loads(text)) == manifest.provenance_sha256


def test_manifest_records_inputs_planning_shots_environment_and_lineage(animatic_delivery: Path) -> None:
    manifest = read_manifest(animatic_delivery)
    script = manifest.inputs.script
    assert script.name == "paper_boat.txt" and (animatic_delivery / script.stored_as).is_file()
    assert manifest.planning.planner.kind == "rules" and manifest.planning.templates
    assert manifest.planning.machine_shotlist.path == "provenance/shotlist.planned.json"
    assert {"torch", "diffusers", "prefect", "av", "ollama"} <= set(manifest.environment.packages)
    for shot in manifest.shots:
        assert shot.clip.spec_sha256 and shot.clip.upscale_settings["width"] == 640
        assert shot.clip.encode_settings["codec"] == "libx264" and shot.clip.started <= shot.clip.finished
    outputs = {o.path: o for o in manifest.outputs}
    cut = outputs["paper-boat.mp4"]
    assert cut.signed and cut.derived_from == sorted(f"shots/{c.shot_id}.mp4" for c in manifest.clips)
    assert outputs["shots/s01-sh01.mp4"].derived_from == ["renderplan.json#s01-sh01", "animatic"]
    assert outputs["shotlist.json"].derived_from == ["provenance/shotlist.planned.json", "provenance/edits.json"]
    assert "manifest.md" in outputs and "How \"Paper Boat\" was made" in (animatic_delivery / "manifest.md").read_text()


def test_diffusers_delivery_records_model_weights_and_scheduler(diffusers_delivery: Path) -> None:
    manifest = read_manifest(diffusers_delivery)
    [model] = manifest.models
    assert model.files and all(len(f.sha256) == 64 for f in model.files)
    assert any(f.path.startswith("transformer/") for f in model.files)
    for clip in manifest.clips:
        assert clip.scheduler == "FlowMatchEulerDiscreteScheduler" and clip.tier == "resident" and clip.seed is not None
    assert any(o.derived_from[-1] == f"model:{model.model_id}" for o in manifest.outputs if o.path.startswith("shots/"))


# --------------------------------------------------------------------------- C2PA and verify


def test_credentials_name_the_model_the_shot_and_the_manifest(diffusers_delivery: Path) -> None:
    manifest = read_manifest(diffusers_delivery)
    clip, spec = manifest.clips[0], manifest.shots[0].spec
    credentials = read_credentials(diffusers_delivery / clip.file)
    assert credentials.ok and credentials.untrusted_signer  # a local CA: valid, not publicly trusted
    created, edited = credentials.actions[:2]
    assert created["action"] == "c2pa.created" and created["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert clip.model_id in created["description"] and edited["action"] == "c2pa.edited"
    # A shot's credentials describe the shot alone (so it is signed once): its spec, model weights, keyframes.
    own = credentials.nightshift
    assert "provenance_sha256" not in own and own["spec"] == spec.model_dump(mode="json")
    assert own["spec_sha256"] == clip.spec_sha256 and own["script_sha256"] == manifest.inputs.script.sha256
    weights = {f.path: f.sha256 for f in manifest.models[0].files}
    assert {w["path"]: w["sha256"] for w in own["model"]["weights"]} == weights and own["render"]["seed"] == clip.seed
    cut = read_credentials(diffusers_delivery / "paper-boat.mp4")
    assert cut.ok and cut.ingredients == len(manifest.clips)
    assert cut.nightshift["provenance_sha256"] == manifest.provenance_sha256
    placed = [a for a in cut.actions if a["action"] == "c2pa.placed"]
    assert len(placed) == len(manifest.clips) and all(a["parameters"]["ingredients"] for a in placed)
    assert cut.actions[0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")  # every shot from a model


def test_fresh_deliveries_verify_clean(animatic_delivery: Path, diffusers_delivery: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    for delivery in (animatic_delivery, diffusers_delivery):
        assert main(["verify", str(delivery)]) == 0
        out = capsys.readouterr().out
        assert out.startswith("VERIFIED") and "PROBLEM" not in out and "local CA" in out


def test_one_altered_byte_fails(animatic_delivery: Path, tmp_path: Path) -> None:
    folder = _copy(animatic_delivery, tmp_path)
    clip = folder / "shots" / "s01-sh02.mp4"
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0x01
    clip.write_bytes(bytes(data))
    problems = _problems(folder)
    assert any(p.startswith("altered: shots/s01-sh02.mp4") for p in problems)
    assert any("shots/s01-sh02.mp4: Content Credentials do not validate" in p for p in problems)


def test_deleted_and_added_files_fail(animatic_delivery: Path, tmp_path: Path) -> None:
    folder = _copy(animatic_delivery, tmp_path)
    (folder / "shotlist.md").unlink()
    (folder / "shots" / "bonus.mp4").write_bytes(b"not ours")
    problems = _problems(folder)
    assert "missing: shotlist.md" in problems and "extra: shots/bonus.mp4 is not in the manifest" in problems


def test_edited_manifest_fails(animatic_delivery: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _copy(animatic_delivery, tmp_path)
    data = json.loads((folder / "manifest.json").read_text())
    data["shots"][0]["spec"]["seed"] += 1  # claim a different seed than the one rendered
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))
    assert any("manifest.json was edited" in p for p in _problems(folder))
    data["shots"][0]["clip"]["frames"] = "many"
    (folder / "manifest.json").write_text(json.dumps(data))
    assert main(["verify", str(folder)]) == 2
    assert "does not match the manifest schema at shots/0/clip/frames" in capsys.readouterr().out


def test_stripped_credentials_fail(animatic_delivery: Path, tmp_path: Path) -> None:
    folder = _copy(animatic_delivery, tmp_path)
    clip = folder / "shots" / "s01-sh01.mp4"
    stripped = tmp_path / "stripped.mp4"
    with av.open(str(clip)) as source, av.open(str(stripped), "w") as target:  # a plain remux drops the C2PA box
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    shutil.move(stripped, clip)
    problems = _problems(folder)
    assert "shots/s01-sh01.mp4: no C2PA Content Credentials (stripped, or never signed)" in problems


# --------------------------------------------------------------------------- human edits and reproduce


def test_shotlist_edits_are_recorded_and_history_grows(animatic_delivery: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"FPS": "8", "WIDTH": "256", "HEIGHT": "160", "OUTPUT_WIDTH": "640", "OUTPUT_HEIGHT": "360"}.items():
        monkeypatch.setenv(f"NIGHTSHIFT_RENDER__{key}", value)
    monkeypatch.chdir(animatic_delivery.parents[2])  # the project that made it: the same signer re-signs
    folder = _copy(animatic_delivery, tmp_path)
    shotlist = json.loads((folder / "shotlist.json").read_text())
    before_action = shotlist["shots"][1]["action"]
    shotlist["shots"][1]["action"] = "The boat capsizes in the gutter."
    shotlist["style_bible"] = "black and white, 16 mm"
    (folder / "shotlist.json").write_text(json.dumps(shotlist, indent=2))
    assert main(["render", str(folder), "--renderer", "animatic"]) == 0
    edits = read_manifest(folder).edits
    assert [(e.shot, e.field) for e in edits] == [(None, "style_bible"), ("s01-sh02", "action")]
    assert edits[1].before == before_action and edits[1].after == "The boat capsizes in the gutter."
    assert edits[1].source == "nightshift render"
    shotlist["shots"][0]["duration_s"] = 3.0
    (folder / "shotlist.json").write_text(json.dumps(shotlist, indent=2))
    assert main(["plan", "--from-shotlist", str(folder / "shotlist.json")]) == 0
    assert main(["render", str(folder), "--renderer", "animatic"]) == 0
    manifest = read_manifest(folder)
    assert len(manifest.edits) == 3 and manifest.edits[2].field == "duration_s" and manifest.edits[:2] == edits
    assert "The boat capsizes in the gutter." in (folder / "manifest.md").read_text()
    assert any("re-rendered" in line for line in manifest.history)
    assert verify_delivery(folder).ok  # re-rendered, re-signed, re-sealed


@pytest.mark.xfail(reason="passes alone and with its module; once, in a mixed run on a loaded machine, the "
                   "reproduced clip differed (PSNR 41.6 dB): cause not found yet, see the issue 12 note", strict=False)
def test_reproduce_a_tiny_pipeline_shot_bit_identical(diffusers_delivery: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["reproduce", str(diffusers_delivery), "--shot", "s01-sh02", "--out", str(tmp_path / "again")]) == 0
    assert "s01-sh02: identical" in capsys.readouterr().out
    assert (tmp_path / "again" / "shots" / "s01-sh02.mp4").is_file()


def test_reproduce_reports_psnr_when_not_identical(animatic_delivery: Path, tmp_path: Path) -> None:
    from nightshift.reproduce import psnr

    manifest = read_manifest(animatic_delivery)
    a, b = (animatic_delivery / c.file for c in manifest.clips[:2])
    value, frames_a, frames_b = psnr(a, a)
    assert value == float("inf") and frames_a == frames_b == manifest.clips[0].frames
    assert psnr(a, b)[0] < 60


# --------------------------------------------------------------------------- signing identity


def test_init_makes_a_private_signing_identity(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "film")]) == 0
    key = tmp_path / "film" / SIGNING_DIR / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700


def test_a_studio_signing_its_first_shots_at_once_gets_one_identity(tmp_path: Path) -> None:
    """Two render slots (or two processes) finishing the first shots of a fresh studio at the same moment both
    ask for the signing identity: one is made, both get it, nothing half-made or left over beside it."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        identities = list(pool.map(lambda _: signing_identity(tmp_path, None, None), range(16)))
    assert {(i.chain, i.key) for i in identities} == {(tmp_path / SIGNING_DIR / CHAIN_FILE,
                                                        tmp_path / SIGNING_DIR / KEY_FILE)}
    assert len({i.subject() for i in identities}) == 1 and (tmp_path / SIGNING_DIR / CA_FILE).is_file()
    beside = (tmp_path / SIGNING_DIR).parent
    assert [p.name for p in beside.iterdir()] == [SIGNING_DIR.name], list(beside.iterdir())  # no staging left


def test_no_key_material_in_the_record(animatic_delivery: Path) -> None:
    for name in ("manifest.json", "manifest.md", "renders.json"):
        assert "PRIVATE KEY" not in (animatic_delivery / name).read_text()


def test_signing_failure_is_reported_not_skipped(animatic_delivery: Path, tmp_path: Path) -> None:
    folder = _copy(animatic_delivery, tmp_path)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    settings = Settings(project_dir=tmp_path, signing={"cert_chain": str(bad), "private_key": str(bad)})
    with pytest.raises(SigningError) as caught:
        seal_delivery(folder, settings, script_name="x.txt", script_sha256="0" * 64, renderer="animatic")
    assert "cannot sign" in str(caught.value)
    with pytest.raises(NightshiftError, match="must be set together"):
        seal_delivery(folder, Settings(project_dir=tmp_path, signing={"cert_chain": str(bad)}),
                      script_name="x.txt", script_sha256="0" * 64, renderer="animatic")
