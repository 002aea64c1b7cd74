"""Every construct of a screenplay reaches the shot list as the writer meant it.

tests/screenplays/constructs.fountain is our own script (written for this test, not taken from a
published screenplay) with one instance of each construct: a cold open with a voice-over and centred
titles, a character introduced in capitals, lines spoken together, a voice-over with CONT'D, a speech
with parentheticals between its lines, a long speech, two characters who share a name, a possessive,
a pronoun after someone else spoke, a sound the script says is heard, a verb that only looks like a sound, an off-screen line, centred
THE END, transitions; and the rest of Fountain: a forced heading, notes, boneyard, sections and
synopses, forced action, dual dialogue, a forced character cue, lyrics, a page break.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nightshift.agents.intake import read_script
from nightshift.agents.planning import plan_script
from nightshift.config import Settings
from nightshift.schemas import Framing, Shot, ShotList, Transition
from nightshift.templating import md_cell

SCRIPT = Path(__file__).resolve().parent / "screenplays" / "constructs.fountain"


@pytest.fixture(scope="module")
def planned() -> ShotList:
    script, decoded = read_script(SCRIPT)
    return plan_script(script, decoded.sha256, Settings(project_dir=SCRIPT.parent), choice="rules")


def _with(shots: list[Shot], words: str) -> list[Shot]:
    return [s for s in shots if words in s.action or words in (s.dialogue or "")]


def test_a_cold_open_is_a_scene_with_its_action_voice_over_and_titles(planned: ShotList) -> None:
    assert planned.scenes[0].heading == "COLD OPEN" and planned.scenes[1].heading == "INT. BRADDOCK GARAGE - DAY"
    cold = [s for s in planned.shots if s.scene == 1]
    assert any("Gulls wheel over the cranes" in s.action for s in cold)
    assert any("Every town has one night" in (s.dialogue or "") for s in cold)
    assert any(s.action == "Title card: OPENING TITLES" for s in cold)


def test_voice_over_and_off_screen_lines_play_over_who_is_present(planned: ShotList) -> None:
    [over] = _with(planned.shots, "They had no idea")  # HARRY (V.O.) (CONT'D)
    assert "HARRY" not in over.characters and over.characters == ["BRICK", "STEEL"]
    assert "heard off screen" in over.action
    [door] = _with(planned.shots, "Who left the door open?")  # STEEL (O.S.)
    assert "STEEL" not in door.characters and "heard off screen" in door.action


def test_the_cast_is_whole_names_from_cues(planned: ShotList) -> None:
    names = set(planned.character_bible)
    assert {"YOUNG EDWARD", "ADULT EDWARD", "BRICK", "STEEL", "HARRY"} <= names
    assert not any(" AND " in name or "'" in name for name in names)  # "BRICK AND STEEL" is two cues
    [kite] = _with(planned.shots, "a kite pulling")
    assert kite.characters == ["YOUNG EDWARD"]  # not ADULT EDWARD, though both are EDWARD
    [date] = _with(planned.shots, "date waits by the railings")
    assert date.characters == [] and date.action.startswith("Will's date")  # a possessive is not a name
    [together] = _with(planned.shots, "To the night shift")
    assert together.framing is Framing.two_shot and together.characters == ["BRICK", "STEEL"]


def test_parentheticals_stay_with_their_lines(planned: ShotList) -> None:
    [speech] = _with(planned.shots, "Sit down.")
    assert speech.dialogue == "BRICK: Sit down. (pause) Not there. (pause) There."
    assert speech.action == "Brick speaks, quietly"
    [shout] = _with(planned.shots, "Look, it flies!")
    assert shout.action == "Young Edward speaks, shouting"


def test_a_long_speech_is_covered_at_speaking_pace_in_several_shots(planned: ShotList) -> None:
    speech = [s for s in planned.shots if (s.dialogue or "").startswith("ADULT EDWARD:") and "flies" not in s.dialogue]
    assert len(speech) >= 3
    words = sum(len(s.dialogue.split(":", 1)[1].split()) for s in speech)
    assert sum(s.duration_s for s in speech) == pytest.approx(words * 60 / 150, abs=1.0)  # 150 words a minute
    assert {s.framing for s in speech} >= {Framing.medium_close, Framing.over_the_shoulder}
    assert any(s.characters == ["YOUNG EDWARD"] for s in speech)  # the listener's reverse
    assert all(s.dialogue.rstrip().endswith((".", "!", "?")) for s in speech)  # split at sentences


def test_a_pronoun_goes_to_the_character_the_script_calls_so(planned: ShotList) -> None:
    [laugh] = _with(planned.shots, "She laughs and sits down anyway.")
    assert laugh.characters == ["STEEL"]  # not BRICK, who spoke last: the script calls Steel "she"


def test_centred_text_becomes_title_cards(planned: ShotList) -> None:
    cards = [s.action for s in planned.shots if s.framing is Framing.insert and s.action.startswith("Title card")]
    assert cards == ["Title card: OPENING TITLES", "Title card: THE END"]


def test_sound_comes_from_what_is_heard_in_its_own_scene(planned: ShotList) -> None:
    [goodbye] = _with(planned.shots, "waves goodbye")
    assert "waves" not in goodbye.sound  # a wave of the hand is not the sea
    sea_wall = [s for s in planned.shots if s.scene == 3]
    assert all("foghorn" in s.sound for s in sea_wall[:-1])  # "We hear a foghorn" is the scene's ambience
    assert not any("foghorn" in s.sound for s in planned.shots if s.scene != 3)
    assert not any("the sea" in s.sound or "waves" in s.sound for s in sea_wall)  # said in a speech, not heard


def test_prose_keeps_the_scripts_casing_and_reads_as_english(planned: ShotList) -> None:
    [intro] = _with(planned.shots, "wipes oil")
    assert intro.action.startswith("Brick Braddock, broad as a door")  # no "Brick BRADDOCK (40s)"
    [shutter] = _with(planned.shots, "The shutter")
    assert shutter.action == "The shutter SLAMS behind him."  # the writer's emphasis is theirs
    establishing = [s.action for s in planned.shots if s.action.startswith("Establishing")]
    assert "Establishing view of interior, braddock garage, by day." in establishing  # not "at day"
    assert any(a.endswith("at night.") for a in establishing)


def test_transitions_are_kept(planned: ShotList) -> None:
    [before_flat] = [s for s in planned.shots if s.scene == 3][-1:]
    assert before_flat.transition is Transition.crossfade
    [sofa] = _with(planned.shots, "Brick looks up from the sofa.")
    assert sofa.transition is Transition.fade_out


def test_the_rest_of_fountain_is_read_as_fountain(planned: ShotList) -> None:
    headings = [scene.heading for scene in planned.scenes]
    assert "FLASHBACK - THE FERRY" in headings  # a forced heading (".")
    text = " ".join(f"{s.action} {s.dialogue or ''}" for s in planned.shots)
    assert "too tidy" not in text and "landlord" not in text  # notes and boneyard never reach a shot
    assert "Act two" not in text and "open door" not in text  # sections and synopses are the outline
    [horn] = _with(planned.shots, "FERRY HORN SOUNDS TWICE")  # forced action ("!"), as written
    assert horn.action == "THE FERRY HORN SOUNDS TWICE."
    [together] = _with(planned.shots, "I told you twice.")  # dual dialogue ("^")
    assert together.framing is Framing.two_shot and together.characters == ["BRICK", "STEEL"]
    [ferryman] = _with(planned.shots, "Nobody listens to the ferryman.")  # a forced cue ("@")
    assert ferryman.characters == ["McCLANE"] and ferryman.action == "McClane speaks"
    assert _with(planned.shots, "Sung: Row, row, the water's low")  # lyrics are kept, as sung
    assert planned.scenes[-1].heading == "INT. STEEL'S FLAT - LATER"  # after a page break ("===")


def test_markdown_is_plain_text_not_html() -> None:
    assert md_cell("BRICK & STEEL: Beer's ready!") == "BRICK & STEEL: Beer's ready!"
    assert md_cell("<b>*bold*</b> | [link](x)") == "\\<b\\>\\*bold\\*\\</b\\> \\| \\[link\\](x)"


def test_a_plan_folder_has_a_storyboard_with_every_scene(tmp_path: Path) -> None:
    from math import ceil

    from pypdf import PdfReader

    from nightshift.planning_job import plan_script_file
    from nightshift.renderers.storyboard import STORYBOARD_PDF

    result = plan_script_file(SCRIPT, Settings(project_dir=tmp_path, planner={"kind": "rules"}), "rules",
                              out_dir=tmp_path / "plan")
    reader = PdfReader(str(result.folder / STORYBOARD_PDF))
    scenes = {}
    for shot in result.shotlist.shots:
        scenes[shot.scene] = scenes.get(shot.scene, 0) + 1
    assert len(reader.pages) == sum(ceil(count / 6) for count in scenes.values())  # each scene starts a page
    assert reader.metadata.title == "Salt and Iron: storyboard"
    page = reader.pages[0]
    assert float(page.mediabox.width) / float(page.mediabox.height) == pytest.approx(16 / 9, abs=0.01)
