#!/usr/bin/env python3
"""Independent check of docs/test-vectors.json "sealed_message".

Follows docs/DESIGN.md "Sealed messages between accounts" with other implementations
than the crate's: libsodium (PyNaCl) converts the Ed25519 keys to X25519 and runs
XChaCha20-Poly1305; OpenSSL (the `cryptography` package) runs X25519, HKDF-SHA256 and
Ed25519. Every vector is opened with the recipient's key and sealed again from its
inputs; both must match the published bytes.

Needs `pip install pynacl cryptography`. Without PyNaCl it says so and exits 0.
"""

import json
import pathlib
import sys

try:
    from nacl import bindings as sodium
    from nacl.exceptions import CryptoError
except ImportError:
    print("sealed vectors: SKIPPED, PyNaCl is not installed (pip install pynacl)")
    sys.exit(0)

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS = pathlib.Path(__file__).resolve().parents[3] / "docs" / "test-vectors.json"

VERSION = b"\x01"
KEY_INFO = b"tidings/message/v1"
SIGNATURE_LABEL = b"tidings/message/v1/sig"
HEADER_LEN = 1 + 32 + 24
TAG_LEN = 16
INNER_HEADER_LEN = 32 + 64 + 4
OVERHEAD = HEADER_LEN + TAG_LEN + INNER_HEADER_LEN  # 173


def bucket(n):
    """256, then powers of two up to 64 KiB, then multiples of 64 KiB."""
    if n <= 256:
        return 256
    if n <= 65536:
        return 1 << (n - 1).bit_length()
    return -(-n // 65536) * 65536


def message_key(shared, eph_pub, recipient_x):
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_x, info=KEY_INFO)
    return hkdf.derive(shared)


def x25519(secret, public):
    return X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(public))


def aad_of(recipient_account, eph_pub):
    return VERSION + recipient_account + eph_pub


def open_sealed(recipient_seed, sealed):
    """Opens a sealed message with the recipient's Ed25519 seed; returns every step."""
    recipient_account, sk64 = sodium.crypto_sign_seed_keypair(recipient_seed)
    recipient_x = sodium.crypto_sign_ed25519_pk_to_curve25519(recipient_account)
    recipient_x_secret = sodium.crypto_sign_ed25519_sk_to_curve25519(sk64)
    assert len(sealed) >= 256 and sealed[:1] == VERSION, "not a sealed message"
    assert bucket(len(sealed)) == len(sealed), "length is not a bucket"
    eph_pub, nonce, ciphertext = sealed[1:33], sealed[33:57], sealed[57:]
    shared = x25519(recipient_x_secret, eph_pub)
    assert shared != bytes(32), "low-order ephemeral key"
    k = message_key(shared, eph_pub, recipient_x)
    inner = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ciphertext, aad_of(recipient_account, eph_pub), nonce, k
    )
    sender, signature = inner[:32], inner[32:96]
    length = int.from_bytes(inner[96:100], "big")
    assert INNER_HEADER_LEN + length <= len(inner), "plaintext length overruns the message"
    assert bucket(OVERHEAD + length) == len(sealed), "plaintext length is of another bucket"
    plaintext, padding = inner[100 : 100 + length], inner[100 + length :]
    assert padding == bytes(len(padding)), "padding is not zero"
    # Raises InvalidSignature on a mismatch.
    Ed25519PublicKey.from_public_bytes(sender).verify(signature, SIGNATURE_LABEL + recipient_account + plaintext)
    return {
        "recipient_account": recipient_account,
        "recipient_x25519_public": recipient_x,
        "eph_public": eph_pub,
        "nonce": nonce,
        "shared_secret": shared,
        "k": k,
        "signature": signature,
        "inner": inner,
        "sender_account": sender,
        "plaintext": plaintext,
    }


def seal(sender_seed, recipient_account, plaintext, eph_secret, nonce):
    """Seals from the inputs alone: Ed25519 signatures are deterministic."""
    sender = Ed25519PrivateKey.from_private_bytes(sender_seed)
    sender_account = sender.public_key().public_bytes_raw()
    recipient_x = sodium.crypto_sign_ed25519_pk_to_curve25519(recipient_account)
    eph_pub = X25519PrivateKey.from_private_bytes(eph_secret).public_key().public_bytes_raw()
    k = message_key(x25519(eph_secret, recipient_x), eph_pub, recipient_x)
    signature = sender.sign(SIGNATURE_LABEL + recipient_account + plaintext)
    total = bucket(OVERHEAD + len(plaintext))
    inner = sender_account + signature + len(plaintext).to_bytes(4, "big") + plaintext
    inner += bytes(total - HEADER_LEN - TAG_LEN - len(inner))
    ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        inner, aad_of(recipient_account, eph_pub), nonce, k
    )
    return VERSION + eph_pub + nonce + ciphertext


def check(vector, accounts):
    sender_seed = bytes.fromhex(accounts[vector["sender_vector"]]["identity_ed25519_seed"])
    recipient_seed = bytes.fromhex(accounts[vector["recipient_vector"]]["identity_ed25519_seed"])
    published = {name: bytes.fromhex(value) for name, value in vector.items() if name not in
                 ("note", "sender_vector", "recipient_vector")}
    opened = open_sealed(recipient_seed, published["sealed"])
    for name, value in opened.items():
        assert value == published[name], f"{name} differs"
    resealed = seal(sender_seed, published["recipient_account"], published["plaintext"],
                    published["eph_secret"], published["nonce"])
    assert resealed == published["sealed"], "sealing the inputs gives other bytes"
    tampered = bytearray(published["sealed"])
    tampered[-1] ^= 1
    try:
        open_sealed(recipient_seed, bytes(tampered))
    except CryptoError:
        pass
    else:
        raise AssertionError("a tampered tag still opens")


def main():
    doc = json.loads(VECTORS.read_text())
    vectors = doc.get("sealed_message", {}).get("vectors", [])
    passed = failed = 0
    for vector in vectors:
        try:
            check(vector, doc["vectors"])
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {vector.get('note', '?')}: {type(e).__name__}: {e}")
        else:
            passed += 1
            print(f"ok   {vector['note']}")
    print(f"sealed vectors: {passed} passed, {failed} failed")
    return 0 if passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
