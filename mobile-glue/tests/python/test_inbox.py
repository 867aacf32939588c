"""At-least-once delivery (issue 11 item 1): a received message is saved as pending before
the app hears of it and is offered again until acknowledged, whatever happens to the
app's process or its listener in between (see harness.py for the environment)."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

from harness import BINDINGS_DIR, WAIT, BindingCase, Recorder, eventually, eventually_async, testbed, tm


class Raising(Recorder):
    """A listener whose on_message always throws."""

    def on_message(self, message):
        super().on_message(message)
        raise RuntimeError("the app's handler failed")


# A child process that opens the install, receives (sync_now) and then waits to be
# killed without acknowledging anything: what a crash right after receipt looks like.
RECEIVE_THEN_HANG = textwrap.dedent(
    """
    import asyncio, sys, time
    sys.path.insert(0, sys.argv[1])
    import tidings_mobile as tm
    state_dir, key_hex, relay, want = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    client = asyncio.run(tm.TidingsClient.open(state_dir, bytes.fromhex(key_hex), relay, None, None))
    got = 0
    deadline = time.monotonic() + 60
    while got < want and time.monotonic() < deadline:
        got += len(asyncio.run(client.sync_now()).messages)
    print("received", got, flush=True)
    time.sleep(600)
    """
)


class InboxTests(BindingCase):
    async def test_a_crash_after_receipt_offers_the_messages_again(self):
        alice = await self.signed_in()
        bob = await self.signed_in()
        alice.client.stop()
        sent = [await bob.client.send(alice.client.account_id(), b"crash %d" % i) for i in range(3)]
        child = subprocess.Popen(
            [sys.executable, "-c", RECEIVE_THEN_HANG, BINDINGS_DIR, alice.dir.name, alice.key.hex(),
             testbed().relay, "3"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), WAIT)
            self.assertEqual(line.split(), ["received", "3"])
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # The app starts again: everything received and not acknowledged is offered.
        again = await self.reopen(alice)
        pending = again.client.pending_messages()
        self.assertEqual([m.hash for m in pending], [r.hash for r in sent])
        self.assertEqual([bytes(m.data) for m in pending], [b"crash 0", b"crash 1", b"crash 2"])
        # Polling does not bring them a second time.
        self.assertEqual((await again.client.sync_now()).messages, [])
        self.assertEqual(await again.client.ack([pending[0].hash, pending[1].hash]), 2)
        self.assertEqual(await again.client.ack([pending[0].hash]), 0)
        again.client.stop()
        third = await self.reopen(alice)
        self.assertEqual([m.hash for m in third.client.pending_messages()], [sent[2].hash])
        self.assertEqual(await third.client.ack([sent[2].hash]), 1)
        self.assertEqual(third.client.pending_messages(), [])
        self.assertEqual((await third.client.sync_now()).messages, [])

    async def test_a_listener_that_raises_loses_nothing(self):
        d = await self.device()
        d.client.set_listener(Raising())
        await d.client.create_account()
        await d.client.connect()
        bob = await self.signed_in()
        receipt = await bob.client.send(d.client.account_id(), b"despite the handler")
        await eventually(
            lambda: any(m.hash == receipt.hash for m in d.client.pending_messages()),
            "the message pending although on_message threw",
        )
        # It is still there after a restart, until acknowledged.
        d.client.stop()
        again = await self.reopen(d)
        self.assertEqual([m.hash for m in again.client.pending_messages()], [receipt.hash])

    async def test_no_listener_at_all_loses_nothing(self):
        d = await self.device()
        d.client.set_listener(None)
        await d.client.create_account()
        await d.client.connect()
        bob = await self.signed_in()
        receipt = await bob.client.send(d.client.account_id(), b"nobody listening")
        await eventually(
            lambda: [m.hash for m in d.client.pending_messages()] == [receipt.hash],
            "the message pending with no listener",
        )

    async def test_pushed_messages_are_pending_too(self):
        alice = await self.signed_in()
        bob = await self.signed_in()
        token = "fcm:" + os.urandom(20).hex()
        change = await alice.client.enable_fast_mode(tm.PushService.FCM, token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        receipt = await bob.client.send(alice.client.account_id(), b"by push")
        pushes = await eventually(
            lambda: [p for p in testbed().pushes(token) if p["status"] == 200 and p["enc"]],
            "the push at the mock FCM",
        )
        outcome = await alice.client.handle_push(pushes[0]["enc"])
        self.assertTrue(outcome.complete)
        self.assertIn(receipt.hash, [m.hash for m in alice.client.pending_messages()])
        self.assertEqual(await alice.client.ack([receipt.hash]), 1)
        again = await alice.client.handle_push(pushes[0]["enc"])
        self.assertTrue(again.duplicate)
        self.assertEqual(alice.client.pending_messages(), [])

    async def test_ten_thousand_messages_none_missing_none_twice(self):
        alice = await self.signed_in()
        bob = await self.signed_in()
        total = 10_000
        to = alice.client.account_id()
        sent = set()
        for start in range(0, total, 250):
            receipts = await asyncio.gather(
                *(bob.client.send(to, b"bulk %d" % i) for i in range(start, min(start + 250, total)))
            )
            sent.update(r.hash for r in receipts)
        self.assertEqual(len(sent), total)
        acked = []

        async def drain():
            pending = alice.client.pending_messages()
            hashes = [m.hash for m in pending]
            if hashes:
                self.assertEqual(await alice.client.ack(hashes), len(hashes))
                acked.extend(hashes)
            return len(acked) >= total

        await eventually_async(drain, "every message received and acknowledged")
        self.assertEqual(len(acked), total, "no message offered twice")
        self.assertEqual(set(acked), sent, "none missing")
        self.assertEqual((await alice.client.sync_now()).messages, [])
        self.assertEqual(alice.client.pending_messages(), [])

    async def test_sealed_messages_name_their_sender(self):
        alice = await self.signed_in()
        bob = await self.signed_in()
        receipt = await bob.client.send_message(alice.client.account_id(), "hi Alice".encode())
        got = await eventually(
            lambda: [m for m in alice.client.pending_messages() if m.hash == receipt.hash],
            "the sealed message",
        )
        self.assertEqual(got[0].sender_account_id, bob.client.account_id())
        self.assertEqual(bytes(got[0].plaintext), b"hi Alice")
        self.assertNotIn(b"hi Alice", bytes(got[0].data), "the relay only stored ciphertext")
        opaque = await bob.client.send(alice.client.account_id(), b"app's own bytes")
        plain = await eventually(
            lambda: [m for m in alice.client.pending_messages() if m.hash == opaque.hash],
            "the opaque message",
        )
        self.assertIsNone(plain[0].sender_account_id)
        self.assertIsNone(plain[0].plaintext)
