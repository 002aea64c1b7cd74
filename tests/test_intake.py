"""Script intake: the corpus parses as its README says; encodings and hostile bytes are handled."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightshift.agents.intake import read_script
from nightshift.errors import ScriptError
from nightshift.schemas import ElementKind


def _kinds(script):
    return [[e.kind for e in scene.elements] for scene in script.scenes]


def test_lighthouse(corpus: Path) -> None:
    script, decoded = read_script(corpus / "lighthouse.fountain")
    assert script.format == "fountain" and script.title == "The Last Keeper"
    assert script.title_page["author"] == "Nightshift sample corpus"
    assert len(script.scenes) == 4
    assert [s.interior for s in script.scenes] == ["EXT", "INT", "INT", "EXT"]
    assert [c.name for c in script.characters] == ["MARA"]
    voice_over = [e for s in script.scenes for e in s.elements if e.extension == "V.O."]
    assert len(voice_over) == 1 and voice_over[0].character == "MARA"
    assert script.scenes[-1].elements[-1].kind is ElementKind.transition
    assert script.scenes[0].elements[-1].parenthetical == "(to herself)"
    assert len(decoded.sha256) == 64


def test_courier(corpus: Path) -> None:
    script, _ = read_script(corpus / "courier.fountain")
    assert len(script.scenes) == 7
    assert {c.name for c in script.characters} == {"JUN", "OLD WEI", "GREY COAT #1", "DISPATCH"}
    headings = [s.heading for s in script.scenes]
    assert "DRONE POV" in headings and script.scenes[headings.index("DRONE POV")].forced
    assert not any("DELETED" in h for h in headings)
    everything = " ".join(s.text() for s in script.scenes)
    assert "glow faintly" not in everything  # the [[note]]
    assert "boneyard" not in everything and "This draft keeps" not in everything
    dual = [e for s in script.scenes for e in s.elements if e.dual]
    assert len(dual) == 1 and dual[0].character == "JUN"
    assert any(e.kind is ElementKind.centered and e.text == "THE END" for s in script.scenes for e in s.elements)
    assert script.scenes[1].time_of_day == "CONTINUOUS"


def test_treatment_and_prose(corpus: Path) -> None:
    train, _ = read_script(corpus / "night_train.md")
    assert train.format == "markdown" and train.title == "Night Train" and len(train.scenes) == 3
    assert train.characters == []
    assert train.scenes[2].location == "Bridge"
    boat, _ = read_script(corpus / "paper_boat.txt")
    assert boat.format == "prose" and len(boat.scenes) == 1 and boat.scenes[0].time_of_day == "DAWN"


@pytest.mark.parametrize("name", ["lighthouse.fountain", "courier.fountain", "night_train.md", "paper_boat.txt"])
def test_encodings_and_line_endings_parse_the_same(corpus: Path, tmp_path: Path, name: str) -> None:
    original, _ = read_script(corpus / name)
    text = (corpus / name).read_text(encoding="utf-8")
    variants = {
        "crlf": text.replace("\n", "\r\n").encode(),
        "bom": b"\xef\xbb\xbf" + text.encode(),
        "utf16": text.encode("utf-16"),
        "latin1": text.replace("\u2014", "-").encode("latin-1", errors="replace"),
        "tabs": text.replace("\n\n", "\n\t\n").encode(),
    }
    reference = original
    if name == "night_train.md":  # the em dash cannot survive Latin-1; compare like with like
        latin_text = text.replace("\u2014", "-")
        (tmp_path / "ref").mkdir()
        (tmp_path / "ref" / name).write_text(latin_text, encoding="utf-8")
        reference_latin, _ = read_script(tmp_path / "ref" / name)
    for label, data in variants.items():
        path = tmp_path / label / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        parsed, decoded = read_script(path)
        expected = reference_latin if (label == "latin1" and name == "night_train.md") else reference
        assert [s.heading for s in parsed.scenes] == [s.heading for s in expected.scenes], label
        assert [[e.text for e in s.elements] for s in parsed.scenes] == [[e.text for e in s.elements] for s in expected.scenes], label
        assert [c.name for c in parsed.characters] == [c.name for c in expected.characters], label


def test_latin1_bytes_decode(tmp_path: Path) -> None:
    path = tmp_path / "cafe.fountain"
    path.write_bytes("INT. CAF\u00c9 - DAY\n\nREN\u00c9E sips.\n\nREN\u00c9E\nD\u00e9j\u00e0 vu.\n".encode("latin-1"))
    script, decoded = read_script(path)
    assert decoded.encoding in ("cp1252", "latin-1")
    assert script.scenes[0].heading == "INT. CAF\u00c9 - DAY"
    assert script.characters[0].name == "REN\u00c9E"


def test_page_breaks(tmp_path: Path) -> None:
    path = tmp_path / "pages.fountain"
    path.write_text("INT. A - DAY\n\nOne.\n\n===\n\nTwo.\n\nEXT. B - NIGHT\n\nThree.\n")
    script, _ = read_script(path)
    assert len(script.scenes) == 2
    assert [e.kind for e in script.scenes[0].elements] == [ElementKind.action, ElementKind.page_break, ElementKind.action]


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "empty"),
        (b"   \n\t\n  \r\n", "empty"),
        (bytes(range(256)) * 40, "binary"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "binary"),
    ],
)
def test_bad_files_get_a_clear_error_naming_the_file(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / "broken script.fountain"
    path.write_bytes(data)
    with pytest.raises(ScriptError) as caught:
        read_script(path)
    assert "broken script.fountain" in str(caught.value) and problem in str(caught.value)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(20 * 1024 * 1024)
    with pytest.raises(ScriptError) as caught:
        read_script(path, max_bytes=10_000_000)
    assert "huge.txt" in str(caught.value) and "21.0 MB" in str(caught.value)
    assert "max_script_mb" in caught.value.hint


def test_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "folder.fountain").mkdir()
    with pytest.raises(ScriptError, match="not a regular file"):
        read_script(tmp_path / "folder.fountain")
    with pytest.raises(ScriptError, match="no such file"):
        read_script(tmp_path / "missing.fountain")


def test_too_many_scenes(tmp_path: Path) -> None:
    path = tmp_path / "long.fountain"
    path.write_text("".join(f"INT. ROOM {i} - DAY\n\nA beat.\n\n" for i in range(30)))
    with pytest.raises(ScriptError, match="30 scenes"):
        read_script(path, max_scenes=20)
    assert len(read_script(path)[0].scenes) == 30
