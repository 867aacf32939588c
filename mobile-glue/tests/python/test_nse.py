"""Notification extension tests: pushes fetched from the testbed's mock APNs are handed,
as iOS does in the background, to a `NotificationProcessor` in a SEPARATE process (a tiny
script importing the bindings), never to the app's `handle_push`, while the app's client
stays open in this process. See harness.py for the environment."""

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import types

from harness import WAIT, BindingCase, apns_token, eventually, testbed, tm

# What the extension runs: open the app's state read-only, process each push, report.
NSE_SCRIPT = r"""
import base64, json, os, sys
sys.path.insert(0, sys.argv[1])
import tidings_mobile as tm

job = json.load(sys.stdin)

def variant(v):
    # Plain enums are Python enums; enums with data are nested classes ("Enum.VARIANT").
    return None if v is None else (v.name if hasattr(v, "name") else type(v).__name__.split(".")[-1])

try:
    processor = tm.NotificationProcessor.open(job["dir"], bytes.fromhex(job["key"]), job["relay"])
except tm.TidingsError as e:
    print(json.dumps({"open_error": type(e).__name__}))
    sys.exit(0)
results = []
for enc in job["pushes"]:
    try:
        if isinstance(enc, dict):  # what a UnifiedPush distributor delivered, in base64
            n = processor.process_web_push(base64.b64decode(enc["web_push"]), job.get("budget_ms"))
        else:
            n = processor.process(enc, job.get("budget_ms"))
    except tm.TidingsError as e:
        results.append({"error": type(e).__name__})
        continue
    results.append({
        "kind": variant(n.kind),
        "hash": n.hash,
        "fetch": variant(n.fetch),
        "sender": n.sender,
        "sender_name": n.sender_name,
        "conversation": n.conversation,
        "suppress": variant(n.suppress),
        "muted_until_ms": getattr(n.suppress, "until_ms", None),
        "title": n.title,
        "body": n.body,
        "limits": [variant(l) for l in n.limits],
        "journaled": n.journaled,
    })
threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
print(json.dumps({"results": results, "threads": threads}))
"""


def run_nse(device, pushes, relay=None, budget_ms=None):
    """Runs the extension in a child process on `pushes` (`enc` strings, or
    `{"web_push": base64 body}`); returns its report."""
    job = {
        "dir": device.dir.name,
        "key": device.key.hex(),
        "relay": relay or testbed().relay,
        "pushes": pushes,
        "budget_ms": budget_ms,
    }
    bindings = os.path.dirname(tm.__file__)
    proc = subprocess.run(
        [sys.executable, "-c", NSE_SCRIPT, bindings],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    if proc.returncode != 0:
        raise AssertionError(f"the extension process failed: {proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def contact(account_id, name, blocked=False, muted_until_ms=None):
    return tm.Contact(
        account_id=account_id, name=name, nickname=None, approved=True, blocked=blocked, muted_until_ms=muted_until_ms
    )


class NotificationExtensionTests(BindingCase):
    async def phone(self):
        """The app: signed in, Fast Mode through the mock APNs, full previews."""
        alice = await self.signed_in()
        alice.token = apns_token()
        change = await alice.client.enable_fast_mode(tm.PushService.APNS, alice.token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        await alice.client.set_previews(True, True)
        alice.seen_pushes = set()
        return alice

    async def next_alert(self, phone):
        """The enc of the next alert push to `phone` at the mock APNs."""

        def new_alerts():
            fresh = [
                p["enc"]
                for p in testbed().pushes(phone.token)
                if p["status"] == 200 and p["kind"] == "alert" and p["enc"] not in phone.seen_pushes
            ]
            return fresh

        fresh = await eventually(lambda: new_alerts(), "an alert push at the mock APNs")
        phone.seen_pushes.add(fresh[0])
        return fresh[0]

    async def test_a_sealed_message_from_a_contact_shows_name_and_text(self):
        alice = await self.phone()
        bob = await self.signed_in()
        bob_id = bob.client.account_id()
        await alice.client.add_contact(contact(bob_id, "Bob"))

        receipt = await bob.client.send_message(alice.client.account_id(), "dinner at eight?".encode())
        enc = await self.next_alert(alice)
        report = await asyncio.to_thread(run_nse, alice, [enc])
        [n] = report["results"]
        self.assertEqual(n["kind"], "MESSAGE")
        self.assertEqual(n["hash"], receipt.hash)
        self.assertEqual(n["fetch"], "NOT_NEEDED")
        self.assertEqual((n["sender"], n["sender_name"], n["conversation"]), (bob_id, "Bob", bob_id))
        self.assertEqual((n["title"], n["body"]), ("Bob", "dinner at eight?"))
        self.assertIsNone(n["suppress"])
        self.assertEqual(n["limits"], [])
        self.assertTrue(n["journaled"])
        # Nothing of the extension keeps running once it has answered.
        self.assertEqual(report["threads"], 1)
        # The app beside it was not disturbed: its client works on.
        await alice.client.sync_now()
        self.assertEqual(alice.client.contact(bob_id).name, "Bob")

    async def test_blocked_and_muted_senders_are_suppressed_and_previews_off_hides_the_text(self):
        alice = await self.phone()
        bob, carol, dave = await self.signed_in(), await self.signed_in(), await self.signed_in()
        ids = {d: d.client.account_id() for d in (bob, carol, dave)}
        later = int(time.time() * 1000) + 3_600_000
        await alice.client.add_contact(contact(ids[bob], "Bob"))
        await alice.client.add_contact(contact(ids[carol], "Carol"))
        await alice.client.add_contact(contact(ids[dave], "Dave"))
        await alice.client.block_contact(ids[carol])
        await alice.client.mute_contact(ids[dave], later)

        me = alice.client.account_id()
        await carol.client.send_message(me, b"from a blocked sender")
        blocked_push = await self.next_alert(alice)
        await dave.client.send_message(me, b"from a muted sender")
        muted_push = await self.next_alert(alice)
        blocked, muted = (await asyncio.to_thread(run_nse, alice, [blocked_push, muted_push]))["results"]
        self.assertEqual(blocked["suppress"], "BLOCKED")
        self.assertEqual((blocked["title"], blocked["body"]), ("New message", None))
        self.assertEqual(muted["suppress"], "MUTED")
        self.assertEqual(muted["muted_until_ms"], later)
        self.assertTrue(blocked["journaled"] and muted["journaled"])

        # Previews off, set in the app while it runs: the extension shows no name, no text.
        await alice.client.set_previews(False, False)
        await bob.client.send_message(me, b"something private")
        [off] = (await asyncio.to_thread(run_nse, alice, [await self.next_alert(alice)]))["results"]
        self.assertIsNone(off["suppress"])
        self.assertEqual((off["title"], off["body"]), ("New message", None))
        self.assertEqual(off["limits"], ["PREVIEWS_OFF"])
        self.assertEqual(off["sender"], ids[bob], "the facts are still there for the app")

    async def test_an_omitted_message_is_fetched_and_an_unreachable_relay_costs_only_the_budget(self):
        alice = await self.phone()
        bob = await self.signed_in()
        bob_id = bob.client.account_id()
        await alice.client.add_contact(contact(bob_id, "Bob"))
        # Too large for an APNs request: the push says data_omitted.
        text = "a long letter " * 450
        receipt = await bob.client.send_message(alice.client.account_id(), text.encode())
        enc = await self.next_alert(alice)

        report = await asyncio.to_thread(run_nse, alice, [enc], None, 5000)
        [fetched] = report["results"]
        self.assertEqual(report["threads"], 1, "the Retrieve's runtime and connection are gone")
        self.assertEqual(fetched["fetch"], "FETCHED")
        self.assertEqual(fetched["hash"], receipt.hash)
        self.assertEqual(fetched["title"], "Bob")
        self.assertTrue(fetched["body"].startswith("a long letter a long letter"))

        # The same push with the relay out of reach: a generic preview, within the budget.
        started = time.monotonic()
        report = await asyncio.to_thread(run_nse, alice, [enc], closed_port_url(), 1000)
        [offline] = report["results"]
        self.assertEqual(report["threads"], 1)
        self.assertIn(offline["fetch"], ("FAILED", "TIMED_OUT"))
        self.assertEqual((offline["title"], offline["body"]), ("New message", None))
        self.assertTrue(offline["journaled"])
        # Far below the relay client's own timeouts (10 s connect, 30 s call), process
        # start-up included.
        self.assertLess(time.monotonic() - started, 8.0)

    async def test_the_extension_refuses_what_is_not_its_own(self):
        alice = await self.phone()
        other = await self.phone()
        bob = await self.signed_in()
        await bob.client.send_message(other.client.account_id(), b"not for alice")
        foreign = await self.next_alert(other)
        report = await asyncio.to_thread(run_nse, alice, [foreign, "not a push"])
        self.assertEqual(report["results"], [{"error": "PushNotForThisDevice"}, {"error": "PushMalformed"}])
        wrong_key = types.SimpleNamespace(dir=alice.dir, key=secrets.token_bytes(32))
        self.assertEqual((await asyncio.to_thread(run_nse, wrong_key, [foreign]))["open_error"], "WrongStateKey")
        signed_out = await self.device()
        self.assertEqual((await asyncio.to_thread(run_nse, signed_out, [foreign]))["open_error"], "NotSignedIn")
