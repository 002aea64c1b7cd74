"""The morning review: a night, the dailies in a real browser, marks, and a next night that renders only what was
marked into a new version. The processes are the ones users start (`nightshift serve`, `nightshift review`), the
browser is Debian's chromium driven by playwright, and the screenshots are kept in test-output/review/."""

from __future__ import annotations

import getpass
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from nightshift.cli import main
from nightshift.config import Settings
from nightshift.delivery import read_manifest
from nightshift.edits import load_edits
from nightshift.engine import NightEngine
from nightshift.errors import NightshiftError
from nightshift.files import sha256_file
from nightshift.inbox import claim
from nightshift.jobs import JobStore
from nightshift.review import ReviewBook
from nightshift.verify import verify_delivery
from tests.faults.test_kill_points import REPO, drive

CORPUS = REPO / "examples" / "corpus"
TOML = """[planner]\nkind = "rules"\n[render]\nfps = 8\nwidth = 128\nheight = 80\noutput_width = 320\noutput_height = 180\n"""
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required"]
SCREENSHOTS = REPO / "test-output" / "review"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _studio(tmp_path: Path, script: str = "paper_boat.txt") -> Path:
    project = tmp_path / "studio"
    (project / "inbox").mkdir(parents=True)
    (project / "nightshift.toml").write_text(TOML)
    shutil.copyfile(CORPUS / script, project / "inbox" / script)
    return project


def _settings(project: Path) -> Settings:
    return Settings(project_dir=project, planner={"kind": "rules"},
                    render={"fps": 8, "width": 128, "height": 80, "output_width": 320, "output_height": 180})


def _deliver_here(project: Path) -> Path:
    """The first night, in this process (the review is what the tests using it are about)."""
    script = next((project / "inbox").glob("*.txt"))
    outcome = NightEngine(_settings(project), renderer="animatic", respect_window=False).run_claim(
        claim(script, project / "inbox").path)
    assert outcome.status == "delivered", outcome.message
    return Path(outcome.delivery)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


class ReviewProcess:
    """`nightshift review` as a user starts it, in the studio folder."""

    def __init__(self, project: Path, *extra: str) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT_")}
        env["PYTHONPATH"] = str(REPO)
        self.log = open(project / "review.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "nightshift.cli", "review", "--port", str(self.port),
                                         *extra], cwd=project, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/", timeout=2)
                break
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((project / "review.log").read_text()) from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture
def review(tmp_path: Path):  # noqa: ANN201
    started: list[ReviewProcess] = []

    def start(project: Path, *extra: str) -> ReviewProcess:
        started.append(ReviewProcess(project, *extra))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def _browser():  # noqa: ANN202
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: scripts/setup.sh installs it (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def _until(condition, timeout_s: float = 20) -> None:  # noqa: ANN001
    """Poll the page from here: its Content-Security-Policy (no eval) rules out playwright's wait_for_function."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the page did not get there in time"
        time.sleep(0.1)


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 180), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_night_a_review_in_the_browser_and_the_next_night_redoes_only_what_was_marked(
        tmp_path: Path, prefect_api: str, review, capsys: pytest.CaptureFixture[str],  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = _studio(tmp_path)
    v1 = _deliver_here(project)  # the first night (the second is `nightshift serve`, as users run it)
    key = f"{v1.parent.name}/{v1.name}"
    v1_files = _hashes(v1)
    server = review(project)
    keyframe = tmp_path / "blender-frame.png"
    keyframe.write_bytes(_png((200, 120, 40)))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    media_statuses: list[int] = []

    with _browser() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.on("response", lambda r: media_statuses.append(r.status) if "/media/" in r.url else None)
        page.goto(server.url + "/")
        page.screenshot(path=str(SCREENSHOTS / "1-nights.png"), full_page=True)
        assert "Paper Boat" in page.inner_text("main")
        page.click("text=v1")
        page.wait_for_selector("article#s01-sh02")
        page.screenshot(path=str(SCREENSHOTS / "2-delivery.png"), full_page=True)
        cards = page.locator("article.shot")
        assert cards.count() == 3
        card_text = page.inner_text("article#s01-sh01")
        for fact in ("s01-sh01", "seed", "quantization", "tier", "rendered in", "animatic"):
            assert fact in card_text, (fact, card_text)

        # Play a shot, then seek inside it: the player asks for byte ranges and gets them.
        video = page.locator("article#s01-sh01 video")
        video.evaluate("v => { v.muted = true; return v.play(); }")
        _until(lambda: video.evaluate("v => v.currentTime") > 0.3)
        video.evaluate("v => { v.pause(); v.currentTime = 2.5; }")
        _until(lambda: video.evaluate("v => !v.seeking && Math.abs(v.currentTime - 2.5) < 0.2"))
        assert 206 in media_statuses, media_statuses
        frame = page.evaluate("""async () => { const img = document.querySelector('article#s01-sh01 img.frame');
                                 await img.decode(); return [img.naturalWidth, img.naturalHeight]; }""")
        assert frame[0] > 100 and frame[1] > 50  # the storyboard frame is an image

        # Mark one redo with a note, a new framing and a first frame; approve another.
        page.click("article#s01-sh02 >> text=Redo with a note")
        page.fill("#note-s01-sh02", "wider, at dusk")
        page.select_option("#framing-s01-sh02", "extreme wide")
        page.set_input_files("#keyframe-s01-sh02", str(keyframe))
        page.click("article#s01-sh02 >> text=Redo tonight")
        page.wait_for_selector(".banner.said")
        assert "s01-sh02 will be rendered again" in page.inner_text(".banner.said")
        page.click("article#s01-sh01 >> text=Approve")
        page.wait_for_selector("article#s01-sh01 .badge.approved")
        page.screenshot(path=str(SCREENSHOTS / "3-marked.png"), full_page=True)

        # The redo is a job in the queue, as `nightshift queue` shows it.
        monkeypatch.chdir(project)
        assert main(["queue"]) == 0
        listed = capsys.readouterr().out
        assert f"redo s01-sh02 of {key}" in listed, listed

        second = drive(project, prefect_api)  # the next night
        assert second.returncode == 0, second.stderr[-3000:]

        page.goto(f"{server.url}/d/{key}")
        page.wait_for_selector("article#s01-sh02 >> text=redone in")
        page.click("article#s01-sh02 >> text=redone in >> a")
        page.wait_for_selector("article#s01-sh02 .badge.new")
        page.screenshot(path=str(SCREENSHOTS / "4-new-version.png"), full_page=True)
        assert "new take 2" in page.inner_text("article#s01-sh02")
        assert "wider, at dusk" in page.inner_text("article#s01-sh02")
        assert "approved" in page.inner_text("article#s01-sh01")
        assert "same as v1" in page.inner_text("article#s01-sh03")
        page.click("text=compare versions")
        page.wait_for_selector("table.compare")
        page.screenshot(path=str(SCREENSHOTS / "5-versions-side-by-side.png"), full_page=True)
        assert page.locator("table.compare td.changed").count() == 1
        browser.close()

    deliveries = sorted(p for p in (project / "output").glob("*/*") if (p / "manifest.json").is_file())
    (v2,) = [p for p in deliveries if p != v1]
    assert v2.name == f"{v1.name}-v2"
    assert _hashes(v1) == v1_files  # the first version is never modified
    manifest = read_manifest(v2)
    assert manifest.version == 2 and manifest.parent is not None and manifest.parent.path == key
    assert manifest.parent.manifest_sha256 == sha256_file(v1 / "manifest.json")
    assert manifest.carried_shots == ["s01-sh01", "s01-sh03"]
    for shot in manifest.carried_shots:  # the same bytes, linked where the file system allows
        assert sha256_file(v1 / f"shots/{shot}.mp4") == sha256_file(v2 / f"shots/{shot}.mp4")
        assert (v1 / f"shots/{shot}.mp4").stat().st_ino == (v2 / f"shots/{shot}.mp4").stat().st_ino
    assert sha256_file(v1 / "shots/s01-sh02.mp4") != sha256_file(v2 / "shots/s01-sh02.mp4")
    rendered = [line for line in second.stderr.splitlines() if " rendering (" in line]
    assert len(rendered) == 1 and "s01-sh02" in rendered[0], rendered  # only the marked shot rendered
    who = getpass.getuser()
    redo = [m for m in manifest.review if m.action == "redo"]
    assert [(m.shot, m.note, m.who) for m in redo] == [("s01-sh02", "wider, at dusk", who)]
    assert [(m.shot, m.who) for m in manifest.review if m.action == "approve"] == [("s01-sh01", who)]
    edits = {(e.shot, e.field): e for e in load_edits(v2)}
    assert edits[("s01-sh02", "framing")].after == "extreme wide" and edits[("s01-sh02", "framing")].note == "wider, at dusk"
    assert edits[("s01-sh02", "take")].before == 1 and edits[("s01-sh02", "take")].after == 2
    assert edits[("s01-sh02", "first_frame_image")].who == who
    assert manifest.inputs.keyframe_images and manifest.inputs.keyframe_images[0].path.startswith("images/s01-sh02-first-")
    for folder in (v1, v2):
        report = verify_delivery(folder)
        assert report.ok, report.text()
    assert any("2 shots carried unchanged" in line for line in verify_delivery(v2).checked)
    # The Prefect UI shows the redo as a run of its own, named for what it does.
    runs = httpx.post(f"{prefect_api}/flow_runs/filter", json={"limit": 200}).json()
    assert any(run["name"] == "Paper Boat: redo s01-sh02" for run in runs), sorted(r["name"] for r in runs)[-10:]


def test_marks_from_the_command_line_follow_the_rules_and_a_killed_redo_night_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], prefect_api: str) -> None:
    project = _studio(tmp_path)
    v1 = _deliver_here(project)
    key = f"{v1.parent.name}/{v1.name}"
    settings = _settings(project)
    monkeypatch.chdir(project)
    book = ReviewBook(settings)
    assert main(["mark", str(v1), "s01-sh01", "--approve", "--note", "keep"]) == 0
    assert main(["mark", key, "s01-sh01", "--redo"]) == 1  # approved: refused, with the way out
    assert "withdraw the approval first" in capsys.readouterr().err
    assert main(["render", str(v1), "--shots", "s01-sh01"]) == 1
    assert "approved in review" in capsys.readouterr().err
    assert main(["mark", key, "s01-sh02", "--redo", "--set", "framing=huge"]) == 1
    err = capsys.readouterr().err
    assert "s01-sh02" in err and "framing" in err and "close-up" in err  # names the shot, the field, what it takes
    assert main(["mark", key, "s01-sh02", "--redo", "--set", "colour=red"]) == 1
    assert "cannot be changed in review" in capsys.readouterr().err
    assert main(["mark", key, "s01-sh02", "s01-sh03", "--redo", "--note", "slower", "--set", "duration_s=3"]) == 0
    assert main(["mark", key, "s01-sh03", "--withdraw"]) == 0  # a redo not started yet is taken back
    jobs = [j for j in JobStore(project / ".nightshift" / "jobs").all() if j.redo is not None]
    assert len(jobs) == 1 and jobs[0].redo.shots == ["s01-sh02"]  # one job per delivery, marks accumulate
    with pytest.raises(NightshiftError, match="not a readable image"):
        book.mark(key, ["s01-sh02"], "redo", keyframe=b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(NightshiftError, match="is not a delivery"):
        book.mark("../../etc", ["s01-sh02"], "approve")
    with pytest.raises(NightshiftError, match="is not a delivery of this studio"):
        book.marks("../../../etc/passwd")  # a key read from a record (a manifest's parent, a job) is checked too

    # The redo night killed mid-shot (`nightshift serve` and its render child): the next start delivers v2 once.
    # (A kill at every other step of a night, redo or not, is the kill-point suite's: tests/faults.)
    v1_files = _hashes(v1)
    killed = drive(project, prefect_api, fault="render:1")
    assert killed.returncode != 0 and not list(v1.parent.glob("*-v2*")), killed.stderr[-2000:]
    assert drive(project, prefect_api).returncode == 0
    (v2,) = [p for p in v1.parent.iterdir() if p.name.startswith(f"{v1.name}-v")]
    assert v2.name == f"{v1.name}-v2" and _hashes(v1) == v1_files
    assert read_manifest(v2).carried_shots == ["s01-sh01", "s01-sh03"]
    assert not list((project / ".nightshift" / "work").iterdir())  # nothing half-made left behind
    engine = NightEngine(settings, renderer="animatic", respect_window=False)
    # The approval carries to v2 (same bytes): a redo of it there is refused until withdrawn there.
    key2 = f"{v2.parent.name}/{v2.name}"
    assert book.states(key2)["s01-sh01"].state == "approved"
    with pytest.raises(NightshiftError, match="approved"):
        book.mark(key2, ["s01-sh01"], "redo")
    book.mark(key2, ["s01-sh01"], "withdraw")
    _, job = book.mark(key2, ["s01-sh01"], "redo", note="one more")
    # A kill while the version's folder was being made leaves only a hidden staging folder: made again.
    staging = Path(job.work_folder).with_name(f".{Path(job.work_folder).name}.preparing")
    staging.mkdir(parents=True)
    (staging / "half.json").write_text("{")
    (outcome,) = engine.render_queue()
    v3 = Path(outcome.delivery)
    manifest = read_manifest(v3)
    assert manifest.version == 3 and manifest.parent.path == key2 and manifest.carried_shots == ["s01-sh02", "s01-sh03"]
    assert not staging.exists()
    for folder in (v1, v2, v3):
        assert verify_delivery(folder).ok, verify_delivery(folder).text()
    # A parent changed after the version was made is named by verify.
    (v2 / "renders.json").write_text((v2 / "renders.json").read_text() + " ")
    manifest_text = (v2 / "manifest.json").read_text()
    (v2 / "manifest.json").write_text(manifest_text.replace('"version": 2', '"version": 2 '))
    assert any("not the one this version was made from" in p for p in verify_delivery(v3).problems)


def test_the_review_server_serves_only_deliveries_and_takes_marks_only_from_its_own_pages(
        tmp_path: Path, review) -> None:  # noqa: ANN001
    project = _studio(tmp_path)
    v1 = _deliver_here(project)
    key = f"{v1.parent.name}/{v1.name}"
    (project / "secret.txt").write_text("not for the web")
    (v1.parent / "stray.txt").write_text("not a delivery")
    server = review(project)
    http = httpx.Client(base_url=server.url, timeout=10)
    assert http.get(f"/media/{key}/shots/s01-sh01.mp4", headers={"Range": "bytes=0-99"}).status_code == 206
    for path in (f"/media/{key}/../../../secret.txt", f"/media/{key}/%2e%2e/%2e%2e/%2e%2e/secret.txt",
                 f"/media/{key}/..%2f..%2f..%2fsecret.txt", f"/media/{key}/%252e%252e%252f%252e%252e%252fsecret.txt",
                 f"/media/{key}/.work/x", "/media/../secret.txt/x", f"/media/{v1.parent.name}/..%2f..%2f/secret.txt",
                 f"/media/{v1.parent.name}/stray.txt/x", "/media/%2e%2e/%2e%2e/secret.txt",
                 f"/media/{key}/%2fetc%2fpasswd", f"/media/{key}//etc/passwd", f"/media/{key}/provenance/../../../../secret.txt"):
        response = http.send(http.build_request("GET", path))  # sent as written: no client-side normalising
        assert response.status_code in (404, 400), (path, response.status_code)
        assert b"not for the web" not in response.content and b"root:" not in response.content
    # A file planted in a delivery that links outside it is not served either.
    (v1 / "shots" / "evil.mp4").symlink_to(project / "secret.txt")
    assert http.get(f"/media/{key}/shots/evil.mp4").status_code == 404
    (v1 / "shots" / "evil.mp4").unlink()
    # Another Host (DNS rebinding) is refused; a form without this server's CSRF token, or from another site, too.
    assert http.get("/", headers={"Host": f"evil.example:{server.port}"}).status_code == 421
    assert http.post("/mark", data={"delivery": key, "shot": "s01-sh01", "action": "approve"}).status_code == 403
    page = http.get(f"/d/{key}").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    assert http.post("/mark", data={"csrf": csrf, "delivery": key, "shot": "s01-sh01", "action": "approve"},
                     headers={"Origin": "http://evil.example"}).status_code == 403
    assert ReviewBook(_settings(project)).marks(key) == []
    # An upload that is not an image, or too large, makes no mark and says why.
    answer = http.post("/mark", data={"csrf": csrf, "delivery": key, "shot": "s01-sh02", "action": "redo", "note": "x"},
                       files={"keyframe": ("frame.png", b"<html>not an image</html>", "image/png")})
    assert answer.status_code == 303 and "not+a+readable+image" in answer.headers["location"]
    huge = http.post("/mark", data={"csrf": csrf, "delivery": key, "shot": "s01-sh02", "action": "redo"},
                     files={"keyframe": ("frame.png", b"\0" * (26 * 1024 * 1024), "image/png")})
    assert huge.status_code == 413
    assert ReviewBook(_settings(project)).marks(key) == []
    ok = http.post("/mark", data={"csrf": csrf, "delivery": key, "shot": "s01-sh01", "action": "approve"})
    assert ok.status_code == 303 and "approved" in ok.headers["location"]
    assert [m.action for m in ReviewBook(_settings(project)).marks(key)] == ["approve"]
    # Beyond loopback only with a token, given once in the address and kept in a cookie.
    refused = subprocess.run([sys.executable, "-m", "nightshift.cli", "review", "--host", "0.0.0.0"], cwd=project,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--token" in refused.stderr
    guarded = review(project, "--token", "s3cret")
    assert httpx.get(guarded.url + "/").status_code == 401
    with httpx.Client(base_url=guarded.url, follow_redirects=True) as client:
        assert client.get("/?token=wrong").status_code == 401
        assert client.get("/?token=s3cret").status_code == 200  # redirected, with the cookie set
        assert "Paper Boat" in client.get("/").text
