"""Fast Mode on phones without Google services (see harness.py for the environment).

UnifiedPush, honestly: the distributor (ntfy, NextPush, Sunup: here the mock Web Push
service) hands the app an endpoint URL and later delivers the raw bytes the relay POSTed
to it, still encrypted (RFC 8291) for keys only the SDK holds; the app's receiver passes
them to `handle_web_push` within Android's ~10 s. A Huawei phone gets an HMS token and
data messages whose `enc` goes to `handle_push`, as with FCM. When the distributor drops
the subscription (410) or Huawei calls the token invalid, the relay prunes it and the
driver falls back to Slow Mode, losing nothing."""

import asyncio
import base64
import os

from harness import FAST_TEST_OPTIONS, BindingCase, eventually, testbed, tm
from test_nse import run_nse


class Distributor:
    """The UnifiedPush distributor on the phone: forwards each body that reached the
    endpoint to the app's receiver, once."""

    def __init__(self, device, subscription_id):
        self.device = device
        self.id = subscription_id
        self.forwarded = set()
        self.outcomes = []
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        while not self.stop.is_set():
            for p in await asyncio.to_thread(testbed().pushes):
                if p["provider"] != "webpush" or p["token"] != self.id or p["status"] != 201:
                    continue
                if p["body"] in self.forwarded:
                    continue
                self.forwarded.add(p["body"])
                body = base64.b64decode(p["body"])
                self.outcomes.append(await self.device.client.handle_web_push(body, 8_000))
            await asyncio.sleep(0.1)

    def message_outcome(self):
        """The first outcome of a message push (config pushes come too), or None."""
        return next((o for o in self.outcomes if o.push.kind == tm.PushKind.MESSAGE), None)

    async def close(self):
        self.stop.set()
        await self.task


# The urgency the relay gives message pushes (config pushes are "normal").
MESSAGE_URGENCY = {"webpush": "high", "hms": "HIGH"}


def delivered(provider, token):
    """The message pushes the provider accepted for `token`, oldest first."""
    ok = 201 if provider == "webpush" else 200
    return [
        p
        for p in testbed().pushes()
        if p["provider"] == provider
        and p["token"] == token
        and p["status"] == ok
        and p["kind"] == MESSAGE_URGENCY[provider]
    ]


class UnifiedPushTests(BindingCase):
    async def unified_push_phone(self):
        """The app at launch on a de-Googled phone: an endpoint from the distributor, Fast
        Mode over Web Push, connected, one sync."""
        phone = await self.device(FAST_TEST_OPTIONS)
        await phone.client.create_account()
        sub = testbed().web_push_subscription()
        change = await phone.client.enable_fast_mode(tm.PushService.WEB_PUSH, sub["endpoint"], testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST, change.detail)
        await phone.client.connect()
        await phone.client.sync_now()
        return phone, sub

    async def test_unified_push_messages_decrypt_in_the_sdk_and_a_gone_endpoint_falls_back(self):
        alice, sub = await self.unified_push_phone()
        bob = await self.signed_in()
        distributor = Distributor(alice, sub["id"])
        try:
            sent = await bob.client.send(alice.client.account_id(), b"over unifiedpush")
            await alice.events.until(lambda: b"over unifiedpush" in alice.events.message_datas(), "a pushed message")
            got = [m for m in alice.events.messages if bytes(m.data) == b"over unifiedpush"]
            self.assertEqual(got[0].source, tm.MessageSource.PUSH)
            outcome = await eventually(lambda: distributor.message_outcome(), "the receiver's outcome")
            self.assertEqual(outcome.push.hash, sent.hash)
            self.assertEqual(outcome.push.kind, tm.PushKind.MESSAGE)
            self.assertTrue(outcome.complete)
            pushes = delivered("webpush", sub["id"])
            self.assertEqual(len(pushes), 1, pushes)
            self.assertEqual(pushes[0]["kind"], "high")

            # The distributor drops the subscription: the relay prunes it at the next push,
            # and the app falls back to Slow Mode with nothing lost.
            testbed().mark_dead("webpush", sub["id"])
            await bob.client.send(alice.client.account_id(), b"to a gone endpoint")
            await alice.events.until(
                lambda: any(c.reason == tm.ModeReason.TOKEN_PRUNED for c in alice.events.modes),
                "the fallback to Slow Mode",
            )
            self.assertEqual(alice.client.mode_status().mode, tm.Mode.SLOW)
            await alice.events.until(
                lambda: b"to a gone endpoint" in alice.events.message_datas(), "the message by polling"
            )
        finally:
            await distributor.close()
        for d in (b"over unifiedpush", b"to a gone endpoint"):
            self.assertEqual(alice.events.message_datas().count(d), 1, d)

        # A new endpoint from the distributor brings Fast Mode back, with the same keys.
        fresh = testbed().web_push_subscription()
        change = await alice.client.enable_fast_mode(tm.PushService.WEB_PUSH, fresh["endpoint"], testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        distributor = Distributor(alice, fresh["id"])
        try:
            again = await bob.client.send(alice.client.account_id(), b"pushed again")
            outcome = await eventually(lambda: distributor.message_outcome(), "a push to the new endpoint")
            self.assertEqual(outcome.push.hash, again.hash)
            await alice.events.until(lambda: b"pushed again" in alice.events.message_datas(), "the message")
        finally:
            await distributor.close()

    async def test_bodies_that_are_not_for_this_install_are_refused_by_name(self):
        alice, sub = await self.unified_push_phone()
        carol, carol_sub = await self.unified_push_phone()
        bob = await self.signed_in()
        await bob.client.send(carol.client.account_id(), b"for carol")
        pushes = await eventually(
            lambda: delivered("webpush", carol_sub["id"]) or None,
            "carol's push at the distributor",
        )
        carols_body = base64.b64decode(pushes[0]["body"])
        with self.assertRaises(tm.TidingsError.PushNotForThisDevice):
            await alice.client.handle_web_push(carols_body, None)
        with self.assertRaises(tm.TidingsError.PushMalformed):
            await alice.client.handle_web_push(b"not a web push message", None)
        altered = bytearray(carols_body)
        altered[-1] ^= 1
        with self.assertRaises(tm.TidingsError.PushNotForThisDevice):
            await carol.client.handle_web_push(bytes(altered), None)
        outcome = await carol.client.handle_web_push(carols_body, None)
        self.assertEqual(bytes(outcome.messages[0].data), b"for carol")

        # A wrong endpoint is named before any request.
        for endpoint in ("ftp://push.example/x", "https://push.example/" + "x" * 1000):
            with self.assertRaises(tm.TidingsError.InvalidArgument):
                await alice.client.enable_fast_mode(tm.PushService.WEB_PUSH, endpoint, testbed().app_id)

    async def test_a_process_started_for_the_push_processes_it_without_the_client(self):
        # Android starts the app's process for the distributor's broadcast; the client is
        # not open there yet, so the receiver uses a NotificationProcessor (read-only).
        alice, sub = await self.unified_push_phone()
        alice.client.set_app_state(tm.AppState.BACKGROUND)
        bob = await self.signed_in()
        sent = await bob.client.send(alice.client.account_id(), b"while in the background")
        pushes = await eventually(lambda: delivered("webpush", sub["id"]) or None, "the push")
        report = await asyncio.to_thread(run_nse, alice, [{"web_push": pushes[0]["body"]}], None, 8_000)
        [result] = report["results"]
        self.assertEqual((result["kind"], result["hash"]), ("MESSAGE", sent.hash), result)
        self.assertTrue(result["journaled"])
        other = await asyncio.to_thread(run_nse, alice, [{"web_push": base64.b64encode(b"junk").decode()}])
        self.assertEqual(other["results"], [{"error": "PushMalformed"}])
        alice.client.set_app_state(tm.AppState.FOREGROUND)
        await alice.events.until(
            lambda: b"while in the background" in alice.events.message_datas(), "the message in the app"
        )
        self.assertEqual(alice.events.message_datas().count(b"while in the background"), 1)

    async def test_sign_out_forgets_the_web_push_keys(self):
        alice, sub = await self.unified_push_phone()
        bob = await self.signed_in()
        await bob.client.send(alice.client.account_id(), b"before sign-out")
        pushes = await eventually(
            lambda: delivered("webpush", sub["id"]) or None,
            "the push before sign-out",
        )
        old_body = base64.b64decode(pushes[0]["body"])
        await alice.client.sign_out()
        await alice.client.create_account()
        # The next account on this install shares no subscription key with the old one.
        with self.assertRaises(tm.TidingsError.PushNotForThisDevice):
            await alice.client.handle_web_push(old_body, None)
        fresh = testbed().web_push_subscription()
        change = await alice.client.enable_fast_mode(tm.PushService.WEB_PUSH, fresh["endpoint"], testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        sent = await bob.client.send(alice.client.account_id(), b"to the new account")
        pushes = await eventually(
            lambda: delivered("webpush", fresh["id"]) or None,
            "the push to the new account",
        )
        outcome = await alice.client.handle_web_push(base64.b64decode(pushes[0]["body"]), None)
        self.assertEqual(outcome.push.hash, sent.hash)
        self.assertEqual(outcome.push.account_id, alice.client.account_id())
        with self.assertRaises(tm.TidingsError.PushNotForThisDevice):
            await alice.client.handle_web_push(old_body, None)


class HuaweiTests(BindingCase):
    async def test_an_hms_token_is_a_fast_mode_transport_with_the_same_fallback(self):
        phone = await self.device(FAST_TEST_OPTIONS)
        await phone.client.create_account()
        token = "hms-" + os.urandom(20).hex()
        change = await phone.client.enable_fast_mode(tm.PushService.HMS, token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST, change.detail)
        await phone.client.connect()
        await phone.client.sync_now()
        bob = await self.signed_in()

        # HMS's onMessageReceived: the data message's `enc`, as for FCM.
        sent = await bob.client.send(phone.client.account_id(), b"over push kit")
        pushes = await eventually(
            lambda: delivered("hms", token) or None,
            "the data message at the mock HMS",
        )
        outcome = await phone.client.handle_push(pushes[0]["enc"], 8_000)
        self.assertEqual(outcome.push.hash, sent.hash)
        self.assertEqual(bytes(outcome.messages[0].data), b"over push kit")

        testbed().mark_dead("hms", token)
        await bob.client.send(phone.client.account_id(), b"to an invalid token")
        await phone.events.until(
            lambda: any(c.reason == tm.ModeReason.TOKEN_PRUNED for c in phone.events.modes),
            "the fallback to Slow Mode",
        )
        self.assertEqual(phone.client.mode_status().mode, tm.Mode.SLOW)
        await phone.events.until(
            lambda: b"to an invalid token" in phone.events.message_datas(), "the message by polling"
        )
        self.assertEqual(phone.events.message_datas().count(b"over push kit"), 1)
