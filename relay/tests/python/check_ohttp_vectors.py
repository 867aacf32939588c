#!/usr/bin/env python3
"""Independent check of docs/test-vectors.json "ohttp_keys".

Follows docs/DESIGN.md "Oblivious HTTP" (epochs, key ids, derivation) from first
principles with other code than the relay's: HKDF-SHA256 and RFC 9180's DeriveKeyPair
for DHKEM(X25519, HKDF-SHA256) written here over Python's hmac, X25519 from OpenSSL (the
`cryptography` package), and the RFC 9458 §3 / RFC 9540 key configuration bytes. The
relay's unit test `ohttp::keys::tests::the_published_vectors_hold` checks the same file
against the relay's own derivation.

`--write` replaces the section with freshly computed vectors (from the inputs below).
Needs `pip install cryptography`; without it, says so and exits 0.
"""

import hashlib
import hmac
import json
import pathlib
import sys

try:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
except ImportError:
    print("ohttp vectors: SKIPPED, the cryptography package is not installed (pip install cryptography)")
    sys.exit(0)

VECTORS = pathlib.Path(__file__).resolve().parents[3] / "docs" / "test-vectors.json"

RELAY_SALT = b"tidings/relay/v1"
ROOT_INFO = b"relay/ohttp"
OHTTP_SALT = b"tidings/ohttp/v1"
INFO_PREFIX = b"ohttp/x25519"
KEM_ID = 0x0020
# (KDF, AEAD): HKDF-SHA256 with ChaCha20-Poly1305, then with AES-128-GCM.
SUITES = [(0x0001, 0x0003), (0x0001, 0x0001)]

INPUTS = [
    {"relay_secret": "00" * 32, "key_id": 0, "rotation_s": 86400, "now_s": 0},
    {"relay_secret": "11" * 32, "key_id": 7, "rotation_s": 604800, "now_s": 1764720000},
    {"relay_secret": bytes(range(32)).hex(), "key_id": 250, "rotation_s": 3600, "now_s": 1764723599},
]


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def hkdf(salt, ikm, info, length=32):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def derive_key_pair(ikm):
    """RFC 9180 §7.1.3 DeriveKeyPair for DHKEM(X25519, HKDF-SHA256)."""
    suite_id = b"KEM" + KEM_ID.to_bytes(2, "big")
    dkp_prk = hkdf_extract(b"", b"HPKE-v1" + suite_id + b"dkp_prk" + ikm)
    sk = hkdf_expand(dkp_prk, (32).to_bytes(2, "big") + b"HPKE-v1" + suite_id + b"sk", 32)
    pk = X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return sk, pk


def vector(inp):
    secret = bytes.fromhex(inp["relay_secret"])
    epoch = inp["now_s"] // inp["rotation_s"]
    key_id = (inp["key_id"] + epoch) % 256
    root = hkdf(RELAY_SALT, secret, ROOT_INFO)
    ikm = hkdf(OHTTP_SALT, root, INFO_PREFIX + bytes([key_id]) + epoch.to_bytes(8, "big"))
    sk, pk = derive_key_pair(ikm)
    suites = b"".join(k.to_bytes(2, "big") + a.to_bytes(2, "big") for k, a in SUITES)
    config = bytes([key_id]) + KEM_ID.to_bytes(2, "big") + pk + len(suites).to_bytes(2, "big") + suites
    return dict(
        inp,
        epoch=epoch,
        epoch_key_id=key_id,
        ohttp_root=root.hex(),
        ikm=ikm.hex(),
        private_key=sk.hex(),
        public_key=pk.hex(),
        key_config_list=(len(config).to_bytes(2, "big") + config).hex(),
    )


def main():
    doc = json.loads(VECTORS.read_text())
    computed = [vector(i) for i in INPUTS]
    if "--write" in sys.argv[1:]:
        doc["ohttp_keys"] = {
            "description": "The OHTTP gateway's key of the epoch current at now_s (DESIGN.md \"Oblivious HTTP\"): "
            "epoch = floor(now_s / rotation_s), its key id, the HKDF values, the RFC 9180 "
            "DeriveKeyPair result and the application/ohttp-keys body (RFC 9540) listing it. "
            "Checked by relay/tests/python/check_ohttp_vectors.py (first principles) and the "
            "relay's ohttp::keys tests.",
            "vectors": computed,
        }
        VECTORS.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        print(f"ohttp vectors: wrote {len(computed)}")
        return 0
    published = doc.get("ohttp_keys", {}).get("vectors", [])
    failures = 0
    for i, (want, got) in enumerate(zip(published, computed)):
        for field, value in want.items():
            if got.get(field) != value:
                print(f"ohttp vector {i}: {field} is {value}, computed {got.get(field)}")
                failures += 1
    if len(published) != len(computed):
        print(f"ohttp vectors: {len(published)} published, {len(computed)} expected")
        failures += 1
    print(f"ohttp vectors: {len(published) - failures if failures else len(published)} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
