"""`nightshift verify OUTPUT_DIR [--trust CA.pem]`: does this delivery still prove how it was made?

Checks, each named in the report:
- manifest.json matches the manifest schema, and its signature (manifest.jws) holds: the whole
  record, every file's sha256 in it, is signed; with --trust, the signer is issued by that CA;
- its record still hashes to its provenance_sha256;
- every listed file is present with its sha256 and nothing unlisted was added, and every hash the
  record states elsewhere (the script copy, the planned shot list, the edit history, planner
  exchanges, user images) matches its file; the edit history matches the edits recorded;
- every MP4 carries valid C2PA credentials bound to its bytes, signed by the same identity as
  manifest.json (trusted under the delivery's own CA, same certificate); each shot's credentials
  describe the shot the record says, and the cut's name this record and the sha256 of every other
  file, so a file changed together with manifest.json is still named.
Exit status 0 only when all hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nightshift.edits import EDITS_JSON, load_edits
from nightshift.errors import NightshiftError
from nightshift.files import OutsideStudio, inside, sha256_file
from nightshift.provenance import MANIFEST_JSON, READABLE_VERSIONS, FileRef, Manifest, provenance_digest
from nightshift.seal import delivered_files
from nightshift.signing import (MANIFEST_JWS, Credentials, DetachedSignature, SigningError, check_detached,
                                read_credentials, read_detached)


class Digests:
    """The sha256 of each file of one delivery, computed once, for paths that stay inside it (a record names them,
    and a forged record could name anything)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.known = folder, {}  # relative path -> sha256

    def path(self, relative: str) -> Path | None:
        try:
            return inside(self.folder / relative, self.folder, what="a file the record names")
        except OutsideStudio:
            return None

    def of(self, relative: str) -> str:
        if relative not in self.known:
            self.known[relative] = sha256_file(self.folder / relative)
        return self.known[relative]


@dataclass
class VerifyReport:
    folder: Path
    checked: list[str] = field(default_factory=list)  # what held
    problems: list[str] = field(default_factory=list)  # what did not, one line each
    notes: list[str] = field(default_factory=list)  # worth knowing, not failures

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"{'VERIFIED' if self.ok else 'FAILED'}: {self.folder}"]
        lines += [f"  ok       {line}" for line in self.checked]
        lines += [f"  note     {line}" for line in self.notes]
        lines += [f"  PROBLEM  {line}" for line in self.problems]
        return "\n".join(lines)


def _load(folder: Path, report: VerifyReport) -> Manifest | None:
    path = folder / MANIFEST_JSON
    if not path.is_file():
        report.problems.append(f"{MANIFEST_JSON} is missing: this folder has no record to check against")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        report.problems.append(f"{MANIFEST_JSON} is not valid JSON ({error})")
        return None
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(Manifest.model_json_schema()).iter_errors(data), key=str)
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        report.problems.append(f"{MANIFEST_JSON} does not match the manifest schema at {where}: {errors[0].message}")
        return None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        report.problems.append(f"{MANIFEST_JSON} does not match the manifest schema: {error.errors()[0]['msg']}")
        return None
    if manifest.manifest_version not in READABLE_VERSIONS:
        report.problems.append(f"{MANIFEST_JSON} is manifest version {manifest.manifest_version}; this Nightshift "
                               f"reads versions {', '.join(READABLE_VERSIONS)} (re-seal it: nightshift render {folder})")
        return None
    report.checked.append(f"{MANIFEST_JSON} matches the manifest schema (version {manifest.manifest_version})")
    return manifest


def _load_trust(trust: Path | None) -> Any:
    if trust is None:
        return None
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(trust.read_bytes())
    except (OSError, ValueError) as error:
        raise NightshiftError(f"{trust}: not a PEM certificate ({error})",
                              "give the CA certificate, e.g. .nightshift/signing/local-ca.pem") from None


def _signature(folder: Path, manifest: Manifest, trust: Any, report: VerifyReport) -> DetachedSignature | None:
    if manifest.signature is None:
        report.problems.append("the delivery is not signed (signing.enabled was false): no signatures to check")
        return None
    if not (folder / MANIFEST_JWS).is_file():
        report.problems.append(f"{MANIFEST_JWS} is missing: {MANIFEST_JSON} carries no signature")
        return None
    try:
        signature, compact = read_detached(folder / MANIFEST_JWS)
    except SigningError as error:
        report.problems.append(str(error))
        return None
    try:
        check_detached(folder / MANIFEST_JSON, signature, compact, folder / MANIFEST_JWS)
        report.checked.append(f"{MANIFEST_JSON} is signed by {signature.signer.describe()}")
    except SigningError as error:  # the signer it names is still the delivery's claim: MP4s are held to it
        report.problems.append(str(error))
    if trust is not None:
        if signature.issued_by(trust):
            report.checked.append(f"the signer is issued by the CA you trust ({trust.subject.rfc4514_string()})")
        else:
            report.problems.append(f"the signer {signature.signer.describe()} is not issued by the CA you trust "
                                   f"({trust.subject.rfc4514_string()}): someone else signed this delivery")
    return signature


def _files(folder: Path, manifest: Manifest, report: VerifyReport, digests: Digests) -> None:
    listed = {f.path: f for f in manifest.outputs}
    present = set(delivered_files(folder))
    for path in sorted(set(listed) - present):
        report.problems.append(f"missing: {path}")
    for path in sorted(present - set(listed)):
        report.problems.append(f"extra: {path} is not in the manifest")
    altered = 0
    for path in sorted(set(listed) & present):
        found = digests.of(path)
        if found != listed[path].sha256:
            altered += 1
            report.problems.append(f"altered: {path} (sha256 {found[:16]}..., the manifest says {listed[path].sha256[:16]}...)")
    if not (set(listed) ^ present) and not altered:
        report.checked.append(f"all {len(listed)} files present, none extra, every sha256 matches")


def _stated_hashes(folder: Path, manifest: Manifest, report: VerifyReport, digests: Digests) -> None:
    """Every hash the record states outside its file list, re-checked against the file itself."""
    stated: list[tuple[str, FileRef | None]] = [("the planned shot list", manifest.planning.machine_shotlist),
                                                ("the edit history", manifest.planning.edit_history)]
    stated += [("a planner exchange", ref) for ref in manifest.planning.exchanges]
    stated += [("a user image", ref) for ref in manifest.inputs.keyframe_images]
    script = manifest.inputs.script
    if script.stored_as:
        stated.append(("the script", FileRef(path=script.stored_as, sha256=script.sha256, bytes=0)))
    wrong = 0
    for what, ref in stated:
        if ref is None:
            continue
        path = digests.path(ref.path)
        if path is None:
            wrong += 1
            report.problems.append(f"{ref.path}: {what} the record names lies outside the delivery")
        elif not path.is_file():
            wrong += 1
            report.problems.append(f"{ref.path}: {what} the record names is missing")
        elif digests.of(ref.path) != ref.sha256:
            wrong += 1
            report.problems.append(f"{ref.path}: {what} does not have the sha256 the record states")
    for clip in manifest.clips:
        for keyframe in clip.keyframes:
            found = digests.path(keyframe)
            if found is None or not found.is_file():
                wrong += 1
                report.problems.append(f"{keyframe}: a keyframe of shot {clip.shot_id} is missing")
    if manifest.edits and manifest.planning.edit_history is None:
        wrong += 1
        report.problems.append(f"{EDITS_JSON}: the record lists {len(manifest.edits)} human edits but no edit history file")
    if (folder / EDITS_JSON).is_file():
        try:
            on_disk = load_edits(folder)
        except (ValueError, KeyError) as error:
            on_disk = None
            report.problems.append(f"{EDITS_JSON} cannot be read ({error})")
        if on_disk is not None and on_disk != manifest.edits:
            wrong += 1
            report.problems.append(f"{EDITS_JSON}: the edit history differs from the edits the record lists")
    if not wrong:
        report.checked.append("the script copy, planned shot list, edit history, exchanges and keyframes match the record")


def _check_mp4(path: str, credentials: Credentials, signature: DetachedSignature | None, manifest: Manifest,
               digests: Digests, report: VerifyReport) -> bool:
    clips = {clip.file: clip for clip in manifest.clips}
    if not credentials.present:
        report.problems.append(f"{path}: no C2PA Content Credentials (stripped, or never signed)")
        if credentials.error:
            report.notes.append(f"{path}: the C2PA reader said: {credentials.error}")
        return False
    if credentials.failures or credentials.state not in ("Valid", "Trusted"):
        report.problems.append(f"{path}: Content Credentials do not validate "
                               f"({', '.join(credentials.failures) or credentials.state}); the file changed after it was signed")
        return False
    if signature is not None and (credentials.signer != signature.signer or not credentials.trusted):
        who = credentials.signer.describe() if credentials.signer else "an unknown signer"
        report.problems.append(f"{path}: signed by {who}, not by the delivery's signer {signature.signer.describe()}")
        return False
    data = credentials.nightshift
    if data is None:
        report.problems.append(f"{path}: Content Credentials are not Nightshift's (no provenance assertion)")
        return False
    if path in clips:
        clip = clips[path]
        if (data.get("shot"), data.get("spec_sha256"), data.get("rendered_sha256")) != (
                clip.shot_id, clip.spec_sha256, clip.rendered_sha256):
            report.problems.append(f"{path}: its credentials describe another shot or render than the record's "
                                   f"{clip.shot_id}")
            return False
        return True
    good = data.get("provenance_sha256") == manifest.provenance_sha256
    if not good:
        report.problems.append(f"{path}: its credentials name provenance {str(data.get('provenance_sha256'))[:16]}..., "
                               "not this manifest's")
    for other, digest in sorted((data.get("files") or {}).items()):
        target = digests.path(other)
        if target is None:
            good = False
            report.problems.append(f"{path}: its credentials list {other!r}, outside the delivery")
        elif not target.is_file():
            good = False
            report.problems.append(f"{other}: missing, though {path}'s signed credentials list it")
        elif digests.of(other) != digest:
            good = False
            report.problems.append(f"{other}: changed since signing ({path}'s signed credentials record another sha256)")
    return good


def _parent(folder: Path, manifest: Manifest, report: VerifyReport, listed: dict[str, FileRef]) -> None:
    """A later version: its parent, where it is still beside it, is the one it was made from, and the shots it
    says it carried are the parent's own bytes."""
    if manifest.parent is None:
        return
    output = folder.parent.parent
    try:
        parent = inside(output / manifest.parent.path, output, what="the parent version")
    except OutsideStudio:
        report.problems.append(f"{MANIFEST_JSON} names a parent outside the output folder: {manifest.parent.path!r}")
        return
    name = f"version {manifest.version}, made from {manifest.parent.path} (version {manifest.parent.version})"
    if not (parent / MANIFEST_JSON).is_file():
        report.notes.append(f"{name}: the parent is not here, so only this version is checked")
        return
    if sha256_file(parent / MANIFEST_JSON) != manifest.parent.manifest_sha256:
        report.problems.append(f"{name}: the parent's {MANIFEST_JSON} is not the one this version was made from")
        return
    parent_files = {f["path"]: f["sha256"] for f in json.loads((parent / MANIFEST_JSON).read_text(encoding="utf-8"))["outputs"]
                    if isinstance(f, dict) and "path" in f and "sha256" in f}
    differ = [shot for shot in manifest.carried_shots
              if listed.get(f"shots/{shot}.mp4") is None
              or parent_files.get(f"shots/{shot}.mp4") != listed[f"shots/{shot}.mp4"].sha256]
    if differ:
        report.problems.append(f"{name}: shots said to be carried unchanged differ from the parent's: {', '.join(differ)}")
    else:
        report.checked.append(f"{name}: the parent's record matches; {len(manifest.carried_shots)} shots carried "
                              "unchanged, the same bytes")


def verify_delivery(folder: Path, trust: Path | None = None) -> VerifyReport:
    report = VerifyReport(folder)
    trusted_ca = _load_trust(trust)
    manifest = _load(folder, report)
    if manifest is None:
        return report
    signature = _signature(folder, manifest, trusted_ca, report)
    digest = provenance_digest(json.loads((folder / MANIFEST_JSON).read_text(encoding="utf-8")))
    if digest == manifest.provenance_sha256:
        report.checked.append(f"the record hashes to its provenance sha256 {digest[:16]}...")
    else:
        report.problems.append(f"{MANIFEST_JSON} was edited: its record hashes to {digest[:16]}..., "
                               f"not the {manifest.provenance_sha256[:16]}... it was sealed with")
    digests = Digests(folder)
    _files(folder, manifest, report, digests)
    _stated_hashes(folder, manifest, report, digests)
    listed = {f.path: f for f in manifest.outputs}
    for clip in manifest.clips:
        if clip.file in listed and clip.sha256 != listed[clip.file].sha256:
            report.problems.append(f"{clip.file}: the shot record and the file list disagree on its sha256")
    _parent(folder, manifest, report, listed)
    if manifest.signature is None:
        return report
    present = set(delivered_files(folder))
    videos = sorted(path for path in present | set(listed) if path.endswith(".mp4") and path in present)
    anchor = signature.anchor_pem() if signature is not None else None
    good = sum(_check_mp4(path, read_credentials(folder / path, anchor), signature, manifest, digests, report)
               for path in videos)
    if good == len(videos) and signature is not None:
        report.checked.append(f"all {good} MP4s carry valid C2PA credentials from the same signer as {MANIFEST_JSON}")
    if signature is not None and trusted_ca is None:
        kind = "a local CA (nightshift init's)" if manifest.signature.local_ca else "a CA you did not name"
        report.notes.append(f"signed under {kind}: valid and consistent, but only `--trust CA.pem` says whose it is")
    return report
