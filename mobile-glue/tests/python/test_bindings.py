"""Binding tests: accounts, messages, Fast Mode and its fallbacks, config sync and
linking, through the generated Python bindings against the testbed (see harness.py)."""

import asyncio
import os
import secrets
import subprocess
import tempfile

from harness import (
    ABANDON, FAST_TEST_OPTIONS, ROOT, WAIT, BindingCase, apns_token, differing_files,
    eventually, testbed, tm,
)


class BindingTests(BindingCase):
    # -- account ---------------------------------------------------------------------

    async def test_phrase_errors_are_typed_exceptions(self):
        self.assertTrue(tm.check_phrase(ABANDON).startswith("01"))
        with self.assertRaises(tm.TidingsError.BadWord) as bad:
            tm.check_phrase(ABANDON.replace("about", "abuot"))
        self.assertEqual(bad.exception.position, 12)
        # Neither the mistyped word nor a suggestion is carried by the error (its str is
        # what apps log); the app asks for suggestions itself.
        self.assertFalse(hasattr(bad.exception, "word"))
        self.assertFalse(hasattr(bad.exception, "suggestions"))
        for shown in (str(bad.exception), repr(bad.exception)):
            self.assertNotIn("abuot", shown)
            self.assertNotIn("about", shown)
        self.assertEqual(tm.suggest_words(ABANDON.replace("about", "abuot"), 12)[0], "about")
        with self.assertRaises(tm.TidingsError.BadChecksum):
            tm.check_phrase(ABANDON.replace("about", "abandon"))
        with self.assertRaises(tm.TidingsError.WordCount) as count:
            tm.check_phrase("abandon about")
        self.assertEqual(count.exception.found, 2)

        d = await self.device()
        with self.assertRaises(tm.TidingsError.BadWord):
            await d.client.restore_account("zebra " * 11 + "abuot")
        self.assertIsNone(d.client.account_id())

    async def test_create_show_phrase_and_reopen(self):
        d = await self.device()
        account_id = await d.client.create_account()
        self.assertEqual(len(account_id), 66)
        self.assertTrue(account_id.startswith("01"))
        phrase = d.client.phrase()
        self.assertEqual(len(phrase.split()), 12)
        self.assertEqual(tm.check_phrase(phrase), account_id)
        with self.assertRaises(tm.TidingsError.AlreadySignedIn):
            await d.client.create_account()
        push_key = d.client.push_key()
        self.assertEqual(len(push_key), 32)
        d.client.stop()
        again = await tm.TidingsClient.open(d.dir.name, d.key, testbed().relay)
        self.assertEqual(again.account_id(), account_id)
        self.assertEqual(again.phrase(), phrase)
        self.assertEqual(bytes(again.push_key()), bytes(push_key))
        again.stop()
        with self.assertRaises(tm.TidingsError.WrongStateKey):
            await tm.TidingsClient.open(d.dir.name, secrets.token_bytes(32), testbed().relay)
        self.assertEqual(bytes(tm.push_key_from_state(d.dir.name, d.key)), bytes(push_key))
        with self.assertRaises(tm.TidingsError.WrongStateKey):
            tm.push_key_from_state(d.dir.name, secrets.token_bytes(32))

    # -- messages and Fast Mode ------------------------------------------------------

    async def test_fast_mode_push_reaches_the_mock_and_decrypts_offline(self):
        alice = await self.signed_in(FAST_TEST_OPTIONS)
        bob = await self.signed_in()
        token = apns_token()
        change = await alice.client.enable_fast_mode(tm.PushService.APNS, token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        self.assertEqual(alice.client.mode_status().mode, tm.Mode.FAST)
        self.assertIsNotNone(alice.client.mode_status().expires_ms)

        receipt = await bob.client.send(alice.client.account_id(), b"hello alice")
        self.assertEqual(len(receipt.hash), 64)
        pushes = await eventually(
            lambda: [p for p in testbed().pushes(token) if p["status"] == 200 and p["kind"] == "alert"],
            "the message's push at the mock APNs",
        )
        enc = pushes[0]["enc"]

        # What a Notification Service Extension does: no client, no network.
        key = tm.push_key_from_state(alice.dir.name, alice.key)
        push = tm.decrypt_push(enc, key)
        self.assertEqual(push.kind, tm.PushKind.MESSAGE)
        self.assertEqual(push.account_id, alice.client.account_id())
        self.assertEqual(push.hash, receipt.hash)
        self.assertEqual(bytes(push.data), b"hello alice")
        with self.assertRaises(tm.TidingsError.PushNotForThisDevice):
            tm.decrypt_push(enc, secrets.token_bytes(32))

        # What the app's push handler does: the message is reported once, however it came.
        outcome = await alice.client.handle_push(enc)
        self.assertEqual(outcome.push.hash, receipt.hash)
        await alice.events.until(lambda: b"hello alice" in alice.events.message_datas(), "on_message")
        again = await alice.client.handle_push(enc)
        self.assertTrue(again.duplicate)
        await alice.client.sync_now()
        self.assertEqual(alice.events.message_datas().count(b"hello alice"), 1)

    async def test_fcm_push_with_data_is_handled_in_process(self):
        carol = await self.signed_in(FAST_TEST_OPTIONS)
        bob = await self.signed_in()
        token = "fcm:" + secrets.token_hex(40)
        change = await carol.client.enable_fast_mode(tm.PushService.FCM, token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        await bob.client.send(carol.client.account_id(), b"via fcm")
        pushes = await eventually(
            lambda: [p for p in testbed().pushes(token) if p["status"] == 200 and p["enc"]],
            "the push at the mock FCM",
        )
        outcome = await carol.client.handle_push(pushes[0]["enc"])
        self.assertEqual(outcome.push.kind, tm.PushKind.MESSAGE)
        await carol.events.until(lambda: b"via fcm" in carol.events.message_datas(), "on_message")
        sources = {m.source for m in carol.events.messages if bytes(m.data) == b"via fcm"}
        self.assertEqual(len(sources), 1)

    async def test_fallback_to_slow_mode_when_the_token_dies(self):
        alice = await self.signed_in(FAST_TEST_OPTIONS)
        bob = await self.signed_in()
        token = apns_token()
        change = await alice.client.enable_fast_mode(tm.PushService.APNS, token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)

        forwarded = set()
        stop = asyncio.Event()

        async def forward_pushes():
            # What iOS does for the app: deliver each push that reached the device.
            while not stop.is_set():
                for p in await asyncio.to_thread(testbed().pushes, token):
                    if p["status"] == 200 and p["enc"] and p["enc"] not in forwarded:
                        forwarded.add(p["enc"])
                        await alice.client.handle_push(p["enc"])
                await asyncio.sleep(0.1)

        forwarder = asyncio.create_task(forward_pushes())
        try:
            await bob.client.send(alice.client.account_id(), b"before")
            await alice.events.until(lambda: b"before" in alice.events.message_datas(), "a message in Fast Mode")

            testbed().mark_dead("apns", token)
            await bob.client.send(alice.client.account_id(), b"to a dead token")
            await alice.events.until(
                lambda: any(c.reason == tm.ModeReason.TOKEN_PRUNED for c in alice.events.modes),
                "the fallback to Slow Mode",
            )
            status = alice.client.mode_status()
            self.assertEqual(status.mode, tm.Mode.SLOW)
            self.assertFalse(status.fast_requested)
            await alice.events.until(lambda: b"to a dead token" in alice.events.message_datas(), "the message by polling")

            await bob.client.send(alice.client.account_id(), b"after the fallback")
            await alice.events.until(lambda: b"after the fallback" in alice.events.message_datas(), "Slow Mode delivery")
            after = [m for m in alice.events.messages if bytes(m.data) == b"after the fallback"]
            self.assertEqual(after[0].source, tm.MessageSource.POLL)
        finally:
            stop.set()
            await forwarder
        datas = alice.events.message_datas()
        for d in (b"before", b"to a dead token", b"after the fallback"):
            self.assertEqual(datas.count(d), 1, d)

        # A fresh token brings Fast Mode back.
        change = await alice.client.enable_fast_mode(tm.PushService.APNS, apns_token(), testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)

    async def test_fallback_when_polling_finds_messages_no_push_announced(self):
        # The pushes are accepted by the provider but never reach the app (nobody calls
        # handle_push) while it is in the foreground: polling finds the messages, and Fast
        # Mode is given up, keeping the token for a retry (test_platform.py: it comes back).
        # As an app at launch: Fast Mode, then connect, then the first sync of this
        # foreground visit, which brings what arrived before it (never a missed push).
        alice = await self.device(FAST_TEST_OPTIONS)
        await alice.client.create_account()
        change = await alice.client.enable_fast_mode(tm.PushService.APNS, apns_token(), testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        await alice.client.connect()
        await alice.client.sync_now()
        bob = await self.signed_in()
        for i in range(FAST_TEST_OPTIONS.missed_push_limit):
            await bob.client.send(alice.client.account_id(), b"unannounced %d" % i)
        await alice.events.until(
            lambda: any(c.reason == tm.ModeReason.PUSHES_MISSING for c in alice.events.modes),
            "the fallback for missing pushes",
        )
        fallback = next(c for c in alice.events.modes if c.reason == tm.ModeReason.PUSHES_MISSING)
        self.assertEqual(fallback.mode, tm.Mode.SLOW)
        self.assertTrue(alice.client.mode_status().fast_requested)
        await bob.client.send(alice.client.account_id(), b"polled")
        await alice.events.until(lambda: b"polled" in alice.events.message_datas(), "delivery by polling")

    async def test_registration_failures_fall_back_to_slow_mode(self):
        d = await self.signed_in(FAST_TEST_OPTIONS)
        change = await d.client.enable_fast_mode(tm.PushService.APNS, apns_token(), "com.example.unknown")
        self.assertEqual(change.mode, tm.Mode.SLOW)
        self.assertEqual(change.reason, tm.ModeReason.SUBSCRIBE_REJECTED)
        self.assertIn("app", change.detail)

        # A relay that does not answer: an address where nothing listens.
        offline = await self.device(FAST_TEST_OPTIONS, relay="http://127.0.0.1:9")
        await offline.client.create_account()
        change = await offline.client.enable_fast_mode(tm.PushService.APNS, apns_token(), testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.SLOW)
        self.assertEqual(change.reason, tm.ModeReason.RELAY_UNREACHABLE)
        self.assertTrue(offline.client.mode_status().fast_requested)
        with self.assertRaises(tm.TidingsError.Unreachable):
            await offline.client.send(d.client.account_id(), b"x")

    # -- config sync and linking -----------------------------------------------------

    async def test_restore_by_phrase_and_link_by_qr_converge(self):
        alice = await self.signed_in()
        ids = ["01" + secrets.token_hex(32) for _ in range(3)]
        await alice.client.set_display_name("Alice")
        for i, cid in enumerate(ids):
            await alice.client.add_contact(
                tm.Contact(account_id=cid, name=f"friend {i}", nickname=None, approved=True, blocked=False, muted_until_ms=None)
            )
        await alice.client.mark_read("chat-1", 1_700_000_000_000)
        await alice.client.set_previews(True, True)

        # A second device by phrase.
        phone = await self.device()
        restored = await phone.client.restore_account(alice.client.phrase())
        self.assertEqual(restored, alice.client.account_id())
        self.assertEqual(phone.client.profile().display_name, "Alice")
        self.assertEqual(phone.client.config_documents(), alice.client.config_documents())
        restore_progress = [p for p in phone.events.progress if p.operation == tm.Operation.RESTORE]
        self.assertTrue(restore_progress)
        self.assertEqual(restore_progress[-1].total, restore_progress[-1].done)
        self.assertGreater(restore_progress[-1].done, 0)
        await phone.client.connect()

        # Edits on both sides, concurrently, converge on both.
        await asyncio.gather(
            phone.client.set_pinned("chat-1", True),
            alice.client.set_contact_nickname(ids[0], "Bestie"),
            phone.client.block_contact(ids[1]),
        )
        await eventually(
            lambda: alice.client.config_documents() == phone.client.config_documents()
            and alice.client.conversation("chat-1").pinned
            and alice.client.contact(ids[1]).blocked
            and phone.client.contact(ids[0]).nickname == "Bestie",
            "both devices converging",
        )
        await alice.events.until(lambda: alice.events.configs, "on_config_changed on the first device")

        # A third device by QR code: the tablet shows a code, Alice inspects it (only a
        # public key travels), both screens show the same digits, Alice approves, the
        # tablet's user confirms.
        tablet = await self.device()
        payload = await tablet.client.begin_link("Alice's tablet")
        self.assertTrue(payload.startswith("tidings-link:v2:"))
        waiting = asyncio.create_task(tablet.client.wait_for_link(int(WAIT * 1000)))
        inspection = await alice.client.inspect_link(payload)
        self.assertEqual(inspection.device_name, "Alice's tablet")
        self.assertEqual(inspection.relay_url, testbed().relay)
        self.assertTrue(inspection.same_relay)
        request = await waiting
        self.assertEqual(request.sas, inspection.sas)
        self.assertEqual(len(request.sas), 6)
        self.assertEqual(request.relay_url, testbed().relay)
        await tablet.events.until(lambda: tablet.events.links, "on_link_request")
        self.assertEqual(tablet.events.links[0].sas, request.sas)
        await alice.client.approve_link()
        outcome = await tablet.client.confirm_link(int(WAIT * 1000))
        self.assertTrue(outcome.is_linked(), outcome)
        self.assertEqual(outcome.account_id, alice.client.account_id())
        self.assertEqual(tablet.client.account_id(), alice.client.account_id())
        self.assertEqual(tablet.client.phrase(), alice.client.phrase())
        self.assertEqual(tablet.client.config_documents(), alice.client.config_documents())

        with self.assertRaises(tm.TidingsError.BadLinkCode):
            await alice.client.inspect_link("not a link code")
        with self.assertRaises(tm.TidingsError.BadLinkCode):
            await alice.client.inspect_link("tidings-link:v1:AAAA")
        with self.assertRaises(tm.TidingsError.AlreadySignedIn):
            await alice.client.begin_link("Alice's phone")
        with self.assertRaises(tm.TidingsError.Link):
            await alice.client.approve_link()

    async def test_nothing_leaves_the_old_device_before_approve_link(self):
        alice = await self.signed_in()
        tablet = await self.device()
        payload = await tablet.client.begin_link("Tablet")
        waiting = asyncio.create_task(tablet.client.wait_for_link(int(WAIT * 1000)))
        inspection = await alice.client.inspect_link(payload)
        # The new device shows the code: it got Alice's hello, and nothing else.
        request = await waiting
        self.assertEqual(request.sas, inspection.sas)
        for _ in range(2):
            with self.assertRaises(tm.TidingsError.Timeout):
                await tablet.client.confirm_link(300)
            self.assertIsNone(tablet.client.account_id())
            self.assertIsNone(tablet.client.phrase())
        await alice.client.approve_link()
        outcome = await tablet.client.confirm_link(int(WAIT * 1000))
        self.assertTrue(outcome.is_linked(), outcome)
        self.assertEqual(tablet.client.account_id(), alice.client.account_id())

    async def test_rejected_link_adopts_nothing(self):
        alice = await self.signed_in()
        newcomer = await self.device()
        payload = await newcomer.client.begin_link("Newcomer")
        waiting = asyncio.create_task(newcomer.client.wait_for_link(int(WAIT * 1000)))
        await alice.client.inspect_link(payload)
        await waiting
        # The codes differ: the new device's user rejects, even if the old one approves.
        await newcomer.client.reject_link()
        await alice.client.approve_link()
        self.assertIsNone(newcomer.client.account_id())
        with self.assertRaises(tm.TidingsError.Link):
            await newcomer.client.confirm_link(300)
        # A rejected scan is forgotten; waiting again finds no new scan.
        with self.assertRaises(tm.TidingsError.Timeout):
            await newcomer.client.wait_for_link(300)
        self.assertIsNone(newcomer.client.account_id())

    async def test_declined_link_is_a_typed_outcome(self):
        alice = await self.signed_in()
        newcomer = await self.device()
        payload = await newcomer.client.begin_link("Newcomer")
        waiting = asyncio.create_task(newcomer.client.wait_for_link(int(WAIT * 1000)))
        await alice.client.inspect_link(payload)
        await waiting
        await alice.client.decline_link()
        outcome = await newcomer.client.confirm_link(int(WAIT * 1000))
        self.assertTrue(outcome.is_declined(), outcome)
        self.assertIsNone(newcomer.client.account_id())
        with self.assertRaises(tm.TidingsError.Link):
            await alice.client.approve_link()

    # -- generated sources -----------------------------------------------------------

    def test_committed_swift_and_kotlin_bindings_are_up_to_date(self):
        bindgen = os.environ.get("TIDINGS_BINDGEN")
        library = os.environ.get("TIDINGS_LIBRARY")
        if not bindgen or not library:
            self.skipTest("TIDINGS_BINDGEN / TIDINGS_LIBRARY not set")
        committed = os.path.join(ROOT, "mobile-glue", "bindings")
        with tempfile.TemporaryDirectory() as tmp:
            for lang in ("swift", "kotlin"):
                subprocess.run(
                    [bindgen, "generate", "--library", library, "--language", lang,
                     "--out-dir", os.path.join(tmp, lang), "--no-format"],
                    check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
                )
                stale = differing_files(os.path.join(committed, lang), os.path.join(tmp, lang))
                self.assertEqual(stale, [], f"stale {lang} bindings: run scripts/bindings.sh")


