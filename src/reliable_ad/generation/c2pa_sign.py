"""C2PA Content Credentials: sign a manifest into each PNG, and read and validate one back.

Wraps `c2pa-python` (the Content Authenticity Initiative's SDK). The signing identity is either the
user's certificate chain and key (``--c2pa-cert``/``--c2pa-key``) or a development identity: a local,
self-signed CA and leaf (ES256, P-256) made once under ``$RELIABLE_AD_HOME/c2pa/`` (else
``~/.cache/reliable-ad/c2pa/``). Its manifests validate but are not *trusted*: no validator knows its
CA. Production use needs a certificate from a C2PA-recognised CA (README, "Provenance").
"""

from __future__ import annotations

import datetime
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from reliable_ad import __version__
from reliable_ad.core.io import atomic_open, atomic_write_bytes

IPTC_TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_ASSERTION = "org.reliable-ad.generation"  # our assertion: seed, settings, model hashes, verdict
UNTRUSTED = "signingCredential.untrusted"  # the one failure a self-signed identity always has
DEV_CERT, DEV_KEY = "dev-chain.pem", "dev-key.pem"
_INSTALL = "pip install c2pa-python cryptography"


def _c2pa():
    try:
        import c2pa
    except ImportError as e:  # a hard dependency; a broken install still gets the command
        raise ImportError(f"C2PA signing needs the c2pa-python package ({e}); install it: {_INSTALL}, "
                          "or pass --no-c2pa") from e
    return c2pa


def identity_dir() -> Path:
    """Where the development identity lives: ``$RELIABLE_AD_HOME/c2pa`` or ``~/.cache/reliable-ad/c2pa``."""
    root = os.environ.get("RELIABLE_AD_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reliable-ad")
    return Path(root) / "c2pa"


@dataclass(frozen=True)
class SigningIdentity:
    """A PEM certificate chain (leaf first) and the leaf's PEM private key (EC P-256: ES256)."""

    chain: bytes = field(repr=False)
    key: bytes = field(repr=False)
    development: bool
    source: str  # the files it came from


# ---------------------------------------------------------------------------------------------
# Identities


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "reliable-ad development identity"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, issuer, public_key, signing_key, *, ca: bool, issuer_key=None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=not ca, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                   encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if not ca:  # C2PA wants a signing EKU on the leaf (emailProtection is one it accepts)
        builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False))
    return builder.sign(signing_key, hashes.SHA256())


def create_development_identity(folder: str | os.PathLike) -> SigningIdentity:
    """Write a new self-signed CA + leaf chain and the leaf's key (mode 600) into ``folder``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("reliable-ad development CA", _name("reliable-ad development CA"), ca_key.public_key(),
                      ca_key, ca=True)
    leaf = _certificate("reliable-ad development signer", ca.subject, key.public_key(), ca_key, ca=False,
                        issuer_key=ca_key.public_key())
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_open(folder / DEV_KEY, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # before the rename: the key is never readable by others
        f.write(key_pem)
    atomic_write_bytes(folder / DEV_CERT, chain)  # after the key: a chain on disk always has its key
    return SigningIdentity(chain, key_pem, True, str(folder))


def development_identity(folder: str | os.PathLike | None = None) -> SigningIdentity:
    """The development identity in ``folder`` (default: `identity_dir`), made on first use."""
    folder = Path(folder) if folder is not None else identity_dir()
    cert, key = folder / DEV_CERT, folder / DEV_KEY
    if cert.is_file() and key.is_file():
        try:
            identity = load_identity(cert, key)
            return SigningIdentity(identity.chain, identity.key, True, str(folder))
        except ValueError:  # two processes made one at once and their files crossed: make a fresh one
            pass
    try:
        return create_development_identity(folder)
    except OSError as e:
        raise ValueError(f"cannot write the C2PA development identity into {folder} ({e}); set RELIABLE_AD_HOME to "
                         "a writable folder, pass --c2pa-cert/--c2pa-key, or --no-c2pa") from e


def _read_pem(path: Path, what: str, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{flag} {str(path)!r}: cannot read the {what} ({e.strerror or e}); give a readable PEM "
                         f"file, or leave out --c2pa-cert/--c2pa-key to sign with the development identity") from e
    if b"-----BEGIN" not in data:
        raise ValueError(f"{flag} {str(path)!r} is not a PEM file (no -----BEGIN line); convert it, e.g. "
                         f"`openssl x509 -in {path.name} -out cert.pem` (key: `openssl pkey`)")
    return data


def load_identity(cert: str | os.PathLike, key: str | os.PathLike) -> SigningIdentity:
    """A user's chain and key, checked: PEM, the key is EC P-256 and belongs to the first certificate.
    Raises ValueError naming the file and the fix."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert, key = Path(cert), Path(key)
    chain, key_pem = _read_pem(cert, "certificate chain", "--c2pa-cert"), _read_pem(key, "private key", "--c2pa-key")
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as e:
        raise ValueError(f"--c2pa-cert {str(cert)!r}: not a PEM certificate chain ({e}); give the signing "
                         "certificate first, then its CA(s)") from e
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--c2pa-key {str(key)!r}: not an unencrypted PEM private key ({e}); decrypt it with "
                         "`openssl pkey -in KEY -out key.pem`") from e
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise ValueError(f"--c2pa-key {str(key)!r}: expected an EC P-256 key (C2PA ES256), got "
                         f"{type(private).__name__}; make one with `openssl ecparam -name prime256v1 -genkey`")
    if certs[0].public_key().public_numbers() != private.public_key().public_numbers():
        raise ValueError(f"--c2pa-key {str(key)!r} does not belong to the first certificate of --c2pa-cert "
                         f"{str(cert)!r}; put the signing (leaf) certificate first in the chain")
    return SigningIdentity(chain, key_pem, False, f"{cert}, {key}")


def resolve_identity(cert: str | None, key: str | None) -> SigningIdentity:
    """The user's identity when both files are given, else the development identity."""
    if cert is None and key is None:
        return development_identity()
    if cert is None or key is None:
        given, missing = ("--c2pa-cert", "--c2pa-key") if key is None else ("--c2pa-key", "--c2pa-cert")
        raise ValueError(f"{given} needs {missing} too: pass both (a PEM chain and its key), or neither for the "
                         "development identity")
    return load_identity(cert, key)


# ---------------------------------------------------------------------------------------------
# Signing


def manifest_definition(title: str, generation: dict) -> dict:
    """The manifest: a c2pa.created action with IPTC's trainedAlgorithmicMedia and our assertion."""
    agent = {"name": "reliable-ad", "version": __version__}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": IPTC_TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent}]}},
            {"label": GENERATION_ASSERTION, "data": json.loads(json.dumps(generation, default=str))},
        ],
    }


class C2paSigner:
    """Signs PNG bytes with one identity; build once per run (the native signer is reused)."""

    def __init__(self, identity: SigningIdentity):
        c2pa = _c2pa()
        self.identity = identity
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain, identity.key, None)
        try:
            self._signer = c2pa.Signer.from_info(info)
        except c2pa.C2paError as e:
            raise ValueError(f"the C2PA SDK refused the signing identity from {identity.source}: {e}; use an ES256 "
                             "certificate with digitalSignature key usage and a signing EKU") from e
        # no JPEG thumbnail in each manifest: it would add tens of kB to every image
        self._context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})

    def sign_png(self, png: bytes, title: str, generation: dict) -> bytes:
        c2pa = _c2pa()
        out = io.BytesIO()
        with c2pa.Builder(manifest_definition(title, generation), self._context) as builder:
            builder.sign(self._signer, "image/png", io.BytesIO(png), out)
        return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class C2paReading:
    """``status``: "valid" (signature and content hashes check out), "invalid" (``errors`` says why),
    "none" (no manifest). ``trusted``: the signer chains to a trust anchor the validator knows."""

    status: str
    trusted: bool = False
    errors: list[str] = field(default_factory=list)
    digital_source_type: str | None = None
    signer: str | None = None
    generator: str | None = None
    generation: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_c2pa(data: bytes, mime: str = "image/png") -> C2paReading:
    """Read and validate the C2PA manifest in ``data`` (the bytes of an image file)."""
    c2pa = _c2pa()
    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            results = reader.get_validation_results() or {}
            active = reader.get_active_manifest() or {}
    except c2pa.C2paError as e:
        if "ManifestNotFound" in type(e).__name__ or "no JUMBF" in str(e):
            return C2paReading("none")
        return C2paReading("invalid", errors=[f"unreadable manifest: {e}"])
    failures = (results.get("activeManifest") or {}).get("failure") or []
    errors = [f"{f.get('code')}: {f.get('explanation')}" for f in failures if f.get("code") != UNTRUSTED]
    reading = C2paReading("invalid" if errors or not active else "valid",
                          trusted=not any(f.get("code") == UNTRUSTED for f in failures), errors=errors)
    for a in active.get("assertions") or []:
        if a.get("label", "").startswith("c2pa.actions"):
            for action in (a.get("data") or {}).get("actions") or []:
                if action.get("action") == "c2pa.created":
                    reading.digital_source_type = action.get("digitalSourceType")
        elif a.get("label") == GENERATION_ASSERTION:
            reading.generation = a.get("data")
    info = active.get("signature_info") or {}
    reading.signer = " / ".join(x for x in (info.get("common_name"), info.get("issuer")) if x) or None
    gen = (active.get("claim_generator_info") or [{}])[0]
    reading.generator = " ".join(str(gen[k]) for k in ("name", "version") if gen.get(k)) or None
    return reading
