"""`nightshift verify` and `nightshift reproduce`: checking a delivery, and re-making one shot from its record."""

from __future__ import annotations

import argparse
from pathlib import Path

from nightshift.config import Settings
from nightshift.errors import NightshiftError
from nightshift.reproduce import reproduce_shot
from nightshift.verify import verify_delivery


def add_commands(commands: argparse._SubParsersAction) -> None:
    verify = commands.add_parser("verify", help="re-hash a delivery, check its manifest and every MP4's C2PA credentials")
    verify.add_argument("output_dir", help="a delivery folder, e.g. output/2026-11-21/the-last-keeper")
    verify.add_argument("--trust", metavar="CA.pem", help="a CA certificate whose signers you trust (your studio's: "
                        ".nightshift/signing/local-ca.pem); without it, verify checks consistency and names the signer")

    reproduce = commands.add_parser("reproduce", help="re-render one shot from a delivery's manifest and compare")
    reproduce.add_argument("output_dir", help="a delivery folder")
    reproduce.add_argument("--shot", required=True, help="the shot id, e.g. s03-sh02")
    reproduce.add_argument("--out", help="where the new clip goes (default: <output_dir>-reproduced-<shot>)")


def cmd_verify(args: argparse.Namespace, settings: Settings, say) -> int:  # noqa: ANN001
    folder = Path(args.output_dir)
    if not folder.is_dir():
        raise NightshiftError(f"{folder}: no such delivery folder", "give a folder under output/YYYY-MM-DD/")
    report = verify_delivery(folder, Path(args.trust) if args.trust else None)
    print(report.text())
    return 0 if report.ok else 2


def cmd_reproduce(args: argparse.Namespace, settings: Settings, say) -> int:  # noqa: ANN001
    folder = Path(args.output_dir)
    if not (folder / "manifest.json").is_file():
        raise NightshiftError(f"{folder}: no manifest.json here", "give a delivery folder made by Nightshift")
    out = Path(args.out) if args.out else folder.with_name(f"{folder.name}-reproduced-{args.shot}")
    say(f"{args.shot}: rendering again from {folder / 'manifest.json'} into {out}")
    report = reproduce_shot(folder, args.shot, out, settings.render)
    print(report.text())
    return 0 if report.identical else 3
