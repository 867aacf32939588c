"""Fast Mode as the platforms really deliver pushes (see harness.py for the environment).

iOS, honestly: while the app is in the background, alert pushes go to the Notification
Service Extension — a separate process (here a child process running a
`NotificationProcessor`, as in test_nse.py) — and never to the app's `handle_push`; a
suspended app does not poll; when the device was offline APNs keeps only the last push,
so some messages have no push at all. On resume the app calls `set_app_state(FOREGROUND)`.
None of that may cost Fast Mode. Pushes that stop arriving while the app is in the
foreground do, and Fast Mode comes back on a later foreground."""

import asyncio
import copy

from harness import FAST_TEST_OPTIONS, BindingCase, apns_token, eventually, testbed, tm
from test_nse import run_nse


def options(**changes):
    """The harness's test options with `changes`."""
    o = copy.copy(FAST_TEST_OPTIONS)
    for name, value in changes.items():
        setattr(o, name, value)
    return o


# iOS-like: a suspended app does not poll (the check interval is longer than the test),
# and the strictest rule: a single message counted as missed gives Fast Mode up.
IOS_OPTIONS = options(fast_check_interval_ms=600_000, push_grace_ms=500, missed_push_limit=1)

# Foreground polling every 3 s finds messages whose pushes never came; after giving up,
# Fast Mode is retried no sooner than 3 s later (`fast_check_interval_ms`), on a foreground.
FOREGROUND_OPTIONS = options(fast_check_interval_ms=3_000, push_grace_ms=1_500, missed_push_limit=3)


def reasons(device):
    with device.events.cond:
        return [c.reason for c in device.events.modes]


class PlatformTests(BindingCase):
    async def fast_phone(self, options):
        """The app at launch: Fast Mode enabled, then connected, then one sync — the first
        of this foreground visit, which brings what arrived before (never a missed push)."""
        phone = await self.device(options)
        await phone.client.create_account()
        phone.token = apns_token()
        change = await phone.client.enable_fast_mode(tm.PushService.APNS, phone.token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        await phone.client.connect()
        await phone.client.sync_now()
        phone.seen_pushes = set()
        return phone

    async def alerts(self, phone, count):
        """The encs of the next `count` alert pushes to `phone` at the mock APNs."""

        def fresh():
            encs = [
                p["enc"]
                for p in testbed().pushes(phone.token)
                if p["status"] == 200 and p["kind"] == "alert" and p["enc"] not in phone.seen_pushes
            ]
            return encs if len(encs) >= count else None

        encs = (await eventually(fresh, f"{count} alert pushes at the mock APNs"))[:count]
        phone.seen_pushes.update(encs)
        return encs

    async def send(self, sender, phone, count, label):
        me = phone.client.account_id()
        return [(await sender.client.send_message(me, f"{label} {i}".encode())).hash for i in range(count)]

    async def resume_and_check(self, phone, expected_hashes, options):
        """The app comes back: everything is pending, and Fast Mode is still on once the
        planner had time (several grace periods) to judge what the resume found."""
        phone.client.set_app_state(tm.AppState.FOREGROUND)
        await eventually(
            lambda: expected_hashes <= {m.hash for m in phone.client.pending_messages()},
            "every message pending after the resume",
        )
        await asyncio.sleep(4 * options.push_grace_ms / 1000)
        status = phone.client.mode_status()
        self.assertEqual((status.mode, status.fast_requested), (tm.Mode.FAST, True), reasons(phone))
        self.assertNotIn(tm.ModeReason.PUSHES_MISSING, reasons(phone))

    async def test_ios_background_pushes_go_to_the_extension_and_fast_mode_survives_three_resumes(self):
        alice = await self.fast_phone(IOS_OPTIONS)
        bob = await self.signed_in()
        sent = set()

        # 1. In the background, 20 messages: their pushes go to the extension process only.
        alice.client.set_app_state(tm.AppState.BACKGROUND)
        hashes = await self.send(bob, alice, 20, "while away")
        encs = await self.alerts(alice, 20)
        report = await asyncio.to_thread(run_nse, alice, encs)
        self.assertEqual(len(report["results"]), 20)
        self.assertTrue(all(r.get("journaled") for r in report["results"]), report["results"])
        sent.update(hashes)
        await self.resume_and_check(alice, sent, IOS_OPTIONS)

        # 2. Offline in the background: APNs kept only the last push, the extension saw
        # one of five; the resume's sync finds the other four, which are not missed.
        alice.client.set_app_state(tm.AppState.BACKGROUND)
        hashes = await self.send(bob, alice, 5, "while offline")
        encs = await self.alerts(alice, 5)
        await asyncio.to_thread(run_nse, alice, encs[-1:])
        sent.update(hashes)
        await self.resume_and_check(alice, sent, IOS_OPTIONS)

        # 3. Once more, the extension processing everything.
        alice.client.set_app_state(tm.AppState.BACKGROUND)
        hashes = await self.send(bob, alice, 5, "away again")
        await asyncio.to_thread(run_nse, alice, await self.alerts(alice, 5))
        sent.update(hashes)
        await self.resume_and_check(alice, sent, IOS_OPTIONS)

        # Pushes still work in the foreground.
        [hash_] = await self.send(bob, alice, 1, "on screen")
        [enc] = await self.alerts(alice, 1)
        outcome = await alice.client.handle_push(enc)
        self.assertEqual(outcome.push.hash, hash_)
        self.assertEqual(alice.client.mode_status().mode, tm.Mode.FAST)

    async def test_fast_mode_given_up_in_the_foreground_comes_back_on_a_later_foreground(self):
        alice = await self.fast_phone(FOREGROUND_OPTIONS)
        bob = await self.signed_in()

        # In the foreground the pushes reach the mock APNs but never the app.
        await self.send(bob, alice, FOREGROUND_OPTIONS.missed_push_limit, "unannounced")
        await self.alerts(alice, FOREGROUND_OPTIONS.missed_push_limit)
        await alice.events.until(
            lambda: tm.ModeReason.PUSHES_MISSING in [c.reason for c in alice.events.modes],
            "the fallback for missing pushes",
        )
        alice.client.set_app_state(tm.AppState.BACKGROUND)
        status = alice.client.mode_status()
        self.assertEqual((status.mode, status.reason), (tm.Mode.SLOW, tm.ModeReason.PUSHES_MISSING))
        self.assertTrue(status.fast_requested, "the token is kept for the retry")

        # Not retried in the background, even once the pause is over.
        await asyncio.sleep(1.5 * FOREGROUND_OPTIONS.fast_check_interval_ms / 1000)
        self.assertEqual(alice.client.mode_status().mode, tm.Mode.SLOW)

        # The next foreground brings Fast Mode back, with the same token.
        alice.client.set_app_state(tm.AppState.FOREGROUND)
        await alice.events.until(
            lambda: alice.events.modes[-1].reason == tm.ModeReason.RECOVERED,
            "Fast Mode back on the foreground",
        )
        self.assertEqual(alice.client.mode_status().mode, tm.Mode.FAST)
        [hash_] = await self.send(bob, alice, 1, "pushed again")
        [enc] = await self.alerts(alice, 1)
        outcome = await alice.client.handle_push(enc)
        self.assertEqual(outcome.push.hash, hash_)
