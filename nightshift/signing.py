"""Signing: a local signing identity, C2PA Content Credentials in MP4s, manifest.json's detached signature.

`nightshift init` (or the first delivery, when no identity exists yet) makes a
local certificate authority and an ES256 signing certificate issued by it, under
<project>/.nightshift/signing/ (folder mode 700, private keys mode 600). C2PA
refuses a self-signed leaf, hence the two levels. Readers report a local CA as
untrusted, which is expected: the signature still binds the credentials to the
file. Users with their own certificate set signing.cert_chain / private_key.

manifest.json is signed by the same identity with a detached JWS (RFC 7515, appendix F) in
manifest.jws: ES256 over the file's bytes, the certificate chain in its `x5c` header, so the
record and every MP4 can be checked to come from one signer.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nightshift.errors import DiskFull, NightshiftError, is_disk_full
from nightshift.files import atomic_output

SIGNING_DIR = Path(".nightshift") / "signing"
CHAIN_FILE, KEY_FILE, CA_FILE, CA_KEY_FILE = "signer-chain.pem", "signer.key", "local-ca.pem", "local-ca.key"
# Codes that mean "the signer is not on a public trust list": expected for the local CA, not tampering.
UNTRUSTED_CODES = {"signingCredential.untrusted"}
NIGHTSHIFT_ASSERTION = "org.nightshift.provenance"  # our assertion: a shot's own record, or the cut's delivery record
MANIFEST_JWS = "manifest.jws"


class SigningError(NightshiftError):
    """A delivered file could not be signed; nothing is delivered unsigned without saying so."""


@dataclass(frozen=True)
class SigningIdentity:
    chain: Path  # PEM: the signing certificate first, then its issuers
    key: Path  # PEM private key
    local_ca: bool

    def subject(self) -> str:
        return self.certificates()[0].subject.rfc4514_string()

    def certificates(self) -> list[Any]:
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.chain.read_bytes())


def _write_private(path: Path, data: bytes) -> None:
    """Create a private file readable by its owner only (0600), whatever the umask."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def create_local_identity(folder: Path, owner: str = "Nightshift user") -> SigningIdentity:
    """A local CA (10 years) and an ES256 signing certificate issued by it (2 years)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if (folder / KEY_FILE).exists():
        raise SigningError(f"{folder / KEY_FILE} already exists", "remove the folder first to make a new identity")
    # Made in a private folder of its own beside the target (one per call: two render slots or two processes
    # may sign their first shot at once) and renamed into place: a crash half-way leaves no half identity
    # behind (a stale `.signing-*` folder is simply ignored).
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))  # mode 0700
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, owner[:64] or "Nightshift user")])

    def usage(sign: bool, certs: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=certs, crl_sign=certs,
                             encipher_only=False, decipher_only=False)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Nightshift local CA")).issuer_name(name("Nightshift local CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(False, True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name("Nightshift signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=730))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    private = dict(encoding=pem, format=serialization.PrivateFormat.PKCS8,
                   encryption_algorithm=serialization.NoEncryption())
    _write_private(staging / CA_KEY_FILE, ca_key.private_bytes(**private))
    _write_private(staging / KEY_FILE, key.private_bytes(**private))
    (staging / CA_FILE).write_bytes(ca.public_bytes(pem))
    (staging / CHAIN_FILE).write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    try:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        os.rename(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if (made := _local_identity(folder)) is not None:
            return made  # made meanwhile by another slot or process: one identity for the studio
        raise
    return SigningIdentity(folder / CHAIN_FILE, folder / KEY_FILE, local_ca=True)


def _local_identity(folder: Path) -> SigningIdentity | None:
    """The local identity in `folder`, when it is all there."""
    if (folder / CHAIN_FILE).is_file() and (folder / KEY_FILE).is_file():
        return SigningIdentity(folder / CHAIN_FILE, folder / KEY_FILE, local_ca=True)
    return None


def signing_identity(project_dir: Path, chain: Path | None, key: Path | None, create: bool = True) -> SigningIdentity:
    """The configured identity, else the project's local one (made now if allowed and missing)."""
    if chain or key:
        if not (chain and key):
            raise SigningError("signing.cert_chain and signing.private_key must be set together")
        for path in (chain, key):
            if not path.is_file():
                raise SigningError(f"{path}: no such signing file", "fix signing.cert_chain / signing.private_key")
        return SigningIdentity(chain, key, local_ca=False)
    folder = project_dir / SIGNING_DIR
    if (found := _local_identity(folder)) is not None:
        return found
    if not create:
        raise SigningError(f"no signing identity in {folder}", "run `nightshift init` to create one")
    try:
        return create_local_identity(folder)
    except SigningError:
        if (made := _local_identity(folder)) is not None:  # made meanwhile by another slot or process
            return made
        raise


def make_signer(identity: SigningIdentity, tsa_url: str | None = None) -> Any:
    import c2pa

    try:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain.read_bytes(), identity.key.read_bytes(),
                                   tsa_url.encode() if tsa_url else None)
        return c2pa.Signer.from_info(info)
    except Exception as error:  # noqa: BLE001 - c2pa raises its own error types
        raise SigningError(f"cannot sign with {identity.chain}: {error}",
                           "the certificate must be ES256 (P-256) with its issuer chain, and the key must match") from None


def sign_video(path: Path, definition: dict[str, Any], signer: Any,
               ingredients: list[tuple[dict[str, Any], Path]] = ()) -> None:
    """Embed signed Content Credentials in the MP4 at `path` (replaced atomically when done)."""
    import c2pa

    try:
        builder = c2pa.Builder(json.dumps(definition))
        for ingredient, source in ingredients:
            with open(source, "rb") as stream:
                builder.add_ingredient(json.dumps(ingredient), "video/mp4", stream)
        with atomic_output(path) as tmp, open(path, "rb") as source, open(tmp, "w+b") as destination:
            builder.sign(signer, "video/mp4", source, destination)
    except NightshiftError:
        raise
    except Exception as error:  # noqa: BLE001
        # c2pa reports a failed write in its own words ("Io: Other: ..."): a full disk is told by the space left.
        if is_disk_full(error) or shutil.disk_usage(path.parent).free < path.stat().st_size + (1 << 20):
            raise DiskFull(f"{path.name}: No space left on device to sign it (the C2PA library said: {error})") from error
        raise SigningError(f"{path.name}: signing its Content Credentials failed: {error}",
                           "check the signing certificate (nightshift init makes a local one)") from None


@dataclass(frozen=True)
class Signer:
    """Who signed: the signing certificate's subject, its issuer and its serial number."""

    subject: dict[str, str]
    issuer: dict[str, str]
    serial: int

    @classmethod
    def of_certificate(cls, certificate: Any) -> Signer:
        def names(name: Any) -> dict[str, str]:
            return {attribute.rfc4514_attribute_name: str(attribute.value) for attribute in name}

        return cls(names(certificate.subject), names(certificate.issuer), certificate.serial_number)

    def describe(self) -> str:
        def text(names: dict[str, str]) -> str:
            return ", ".join(f"{key}={value}" for key, value in sorted(names.items()))

        return f"{text(self.subject)} (issued by {text(self.issuer)}; serial {self.serial:x})"


def _signer_of(store: dict[str, Any], active: dict[str, Any] | None) -> Signer | None:
    for manifest in store.get("manifests", []):
        if active is not None and manifest.get("label") == active.get("label"):
            info = manifest.get("signature", {}).get("certificateInfo", {})
            try:
                return Signer(dict(info["subject"]), dict(info["issuer"]), int(info["serialNumber"], 16))
            except (KeyError, TypeError, ValueError):
                return None
    return None


@dataclass
class Credentials:
    """What a reader finds in a file: the active manifest, its validation, our provenance assertion."""

    present: bool
    state: str | None = None  # Valid, Trusted or Invalid
    failures: list[str] = field(default_factory=list)  # validation failure codes (untrusted signer excluded)
    untrusted_signer: bool = False
    actions: list[dict[str, Any]] = field(default_factory=list)
    nightshift: dict[str, Any] | None = None
    ingredients: int = 0
    error: str | None = None
    signer: Signer | None = None
    trusted: bool = False  # the signer chains to the trust anchor the reader was given

    @property
    def ok(self) -> bool:
        return self.present and not self.failures and self.state in ("Valid", "Trusted") and self.nightshift is not None


def _reader_context(trust_anchor: bytes | None) -> Any:
    import c2pa

    if trust_anchor is None:
        return None
    settings = {"verify": {"verify_trust": True}, "trust": {"trust_anchors": trust_anchor.decode("ascii")}}
    return c2pa.Context(c2pa.Settings.from_dict(settings))


def read_credentials(path: Path, trust_anchor: bytes | None = None) -> Credentials:
    """The file's active C2PA manifest, validated; with `trust_anchor` (PEM), also whether its signer chains to it."""
    import c2pa

    try:
        with open(path, "rb") as stream:
            reader = c2pa.Reader("video/mp4", stream, context=_reader_context(trust_anchor))
            active = reader.get_active_manifest()
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
            signer = _signer_of(json.loads(reader.crjson()), active)
    except Exception as error:  # noqa: BLE001 - no manifest at all raises
        return Credentials(present=False, error=str(error))
    if active is None:
        return Credentials(present=False)
    failures = [f["code"] for f in results.get("activeManifest", {}).get("failure", [])]
    untrusted = any(code in UNTRUSTED_CODES for code in failures)
    credentials = Credentials(present=True, state=state, untrusted_signer=untrusted,
                              failures=[code for code in failures if code not in UNTRUSTED_CODES],
                              ingredients=len(active.get("ingredients", [])), signer=signer,
                              trusted=trust_anchor is not None and state == "Trusted")
    for assertion in active.get("assertions", []):
        if assertion["label"].startswith("c2pa.actions"):
            credentials.actions += assertion["data"].get("actions", [])
        elif assertion["label"] == NIGHTSHIFT_ASSERTION:
            credentials.nightshift = assertion["data"]
    return credentials



# --------------------------------------------------------------------------- manifest.json's own signature


def sign_detached(path: Path, identity: SigningIdentity) -> Path:
    """Write <folder>/manifest.jws: a detached ES256 JWS over `path`'s bytes, with the certificate chain."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from jwcrypto import jwk, jws

    try:
        key = jwk.JWK.from_pem(identity.key.read_bytes())
        chain = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii") for cert in identity.certificates()]
        token = jws.JWS(path.read_bytes())
        token.add_signature(key, alg="ES256", protected=json.dumps(
            {"alg": "ES256", "x5c": chain, "cty": "application/json", "nightshift_file": path.name}))
        token.detach_payload()
        compact = token.serialize(compact=True)
    except Exception as error:  # noqa: BLE001 - jwcrypto raises its own error types
        raise SigningError(f"{path.name}: signing it failed: {error}",
                           "the key must be the ES256 (P-256) key of signing.cert_chain") from None
    target = path.parent / MANIFEST_JWS
    with atomic_output(target) as tmp:
        tmp.write_text(compact + "\n", encoding="ascii")
    return target


@dataclass
class DetachedSignature:
    """What manifest.jws says once checked: who signed, with which chain (leaf first)."""

    signer: Signer
    chain: list[Any]

    def anchor_pem(self) -> bytes:
        """The top of the chain, as a trust anchor for reading the MP4s' credentials."""
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.chain[-1].public_bytes(Encoding.PEM)

    def issued_by(self, authority: Any) -> bool:
        """Whether the chain (its links already checked) leads to `authority`, a CA certificate."""
        if any(certificate == authority for certificate in self.chain):
            return True
        try:
            self.chain[-1].verify_directly_issued_by(authority)
        except Exception:  # noqa: BLE001 - another issuer, or a signature that does not check
            return False
        return True


def read_detached(signature_file: Path) -> tuple[DetachedSignature, str]:
    """The signer a detached JWS names, its chain links checked (not yet the signed content), and the token."""
    from cryptography import x509

    try:
        compact = signature_file.read_text(encoding="ascii").strip()
        header_b64 = compact.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
        chain = [x509.load_der_x509_certificate(base64.b64decode(item)) for item in header["x5c"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise SigningError(f"{signature_file.name} is not a readable signature ({error})") from None
    if header.get("alg") != "ES256" or not chain:
        raise SigningError(f"{signature_file.name}: expected an ES256 signature with its certificate chain")
    for lower, upper in zip(chain, chain[1:]):
        try:
            lower.verify_directly_issued_by(upper)
        except Exception:  # noqa: BLE001
            raise SigningError(f"{signature_file.name}: its certificate chain is broken "
                               f"({lower.subject.rfc4514_string()} is not issued by {upper.subject.rfc4514_string()})") from None
    return DetachedSignature(Signer.of_certificate(chain[0]), chain), compact


def check_detached(path: Path, signature: DetachedSignature, compact: str, signature_file: Path) -> None:
    """Raise SigningError unless `compact` is `signature`'s signer's valid signature over `path`'s bytes."""
    from jwcrypto import jwk, jws

    token = jws.JWS()
    try:
        token.deserialize(compact)
        token.verify(jwk.JWK.from_pyca(signature.chain[0].public_key()), alg="ES256", detached_payload=path.read_bytes())
    except Exception:  # noqa: BLE001 - jwcrypto raises InvalidJWSSignature and others
        raise SigningError(f"{path.name} does not match its signature in {signature_file.name}: "
                           "it was changed after it was signed") from None
