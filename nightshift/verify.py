"""`nightshift verify OUTPUT_DIR`: does this delivery still prove how it was made?

Checks, each named in the report: manifest.json is valid against the manifest schema; its
content still hashes to its provenance_sha256; every listed file is present with its recorded
sha256 and nothing unlisted was added; every MP4 carries valid C2PA Content Credentials that
bind to the file and name this manifest's provenance_sha256. Exit status 0 only when all hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from nightshift.provenance import MANIFEST_JSON, MANIFEST_VERSION, Manifest, provenance_digest
from nightshift.seal import delivered_files
from nightshift.files import sha256_file
from nightshift.signing import read_credentials


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
    if manifest.manifest_version != MANIFEST_VERSION:
        report.problems.append(f"{MANIFEST_JSON} is manifest version {manifest.manifest_version}; this Nightshift "
                               f"reads version {MANIFEST_VERSION}")
        return None
    report.checked.append(f"{MANIFEST_JSON} matches the manifest schema (version {MANIFEST_VERSION})")
    return manifest


def verify_delivery(folder: Path) -> VerifyReport:
    report = VerifyReport(folder)
    manifest = _load(folder, report)
    if manifest is None:
        return report
    digest = provenance_digest(json.loads((folder / MANIFEST_JSON).read_text(encoding="utf-8")))
    if digest == manifest.provenance_sha256:
        report.checked.append(f"the record hashes to its provenance sha256 {digest[:16]}...")
    else:
        report.problems.append(f"{MANIFEST_JSON} was edited: its record hashes to {digest[:16]}..., "
                               f"not the {manifest.provenance_sha256[:16]}... it was sealed with")

    listed = {f.path: f for f in manifest.outputs}
    present = set(delivered_files(folder))
    for path in sorted(set(listed) - present):
        report.problems.append(f"missing: {path}")
    for path in sorted(present - set(listed)):
        report.problems.append(f"extra: {path} is not in the manifest")
    altered = 0
    for path in sorted(set(listed) & present):
        found = sha256_file(folder / path)
        if found != listed[path].sha256:
            altered += 1
            report.problems.append(f"altered: {path} (sha256 {found[:16]}..., the manifest says {listed[path].sha256[:16]}...)")
    if not (set(listed) ^ present) and not altered:
        report.checked.append(f"all {len(listed)} files present, none extra, every sha256 matches")

    clips = {clip.file: clip for clip in manifest.clips}
    for path, clip in clips.items():
        if path in listed and clip.sha256 != listed[path].sha256:
            report.problems.append(f"{path}: the shot record and the file list disagree on its sha256")
    if manifest.signature is None:
        report.problems.append("the delivery is not signed (signing.enabled was false): no Content Credentials to check")
        return report
    signed = [path for path in sorted(listed) if path.endswith(".mp4") and path in present]
    good = 0
    for path in signed:
        credentials = read_credentials(folder / path)
        if not credentials.present:
            report.problems.append(f"{path}: no C2PA Content Credentials (stripped, or never signed)")
            if credentials.error:
                report.notes.append(f"{path}: the C2PA reader said: {credentials.error}")
        elif credentials.failures or credentials.state not in ("Valid", "Trusted"):
            report.problems.append(f"{path}: Content Credentials do not validate ({', '.join(credentials.failures) or credentials.state}); "
                                   "the file changed after it was signed")
        elif credentials.nightshift is None:
            report.problems.append(f"{path}: Content Credentials are not Nightshift's (no provenance assertion)")
        elif credentials.nightshift.get("provenance_sha256") != manifest.provenance_sha256:
            report.problems.append(f"{path}: its credentials name provenance "
                                   f"{str(credentials.nightshift.get('provenance_sha256'))[:16]}..., not this manifest's")
        elif path in clips and credentials.nightshift.get("rendered_sha256") != clips[path].rendered_sha256:
            report.problems.append(f"{path}: its credentials name a different render than the manifest's shot record")
        else:
            good += 1
    if good == len(signed):
        report.checked.append(f"all {good} MP4s carry valid C2PA credentials bound to the file and to this manifest")
    if good and manifest.signature.local_ca:
        report.notes.append(f"signed by {manifest.signature.signer} under a local CA: valid, but not on a public "
                            "trust list (expected for `nightshift init`'s certificate)")
    return report
