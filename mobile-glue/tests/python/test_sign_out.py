"""Sign-out and wipe that really stop pushes (issue 11 item 5), with the relay unreachable
while signing out: the removal of the push registration is queued durably and sent once
the relay answers again (see harness.py for the environment)."""

import os

from harness import FAST_TEST_OPTIONS, BindingCase, Proxy, apns_token, eventually, eventually_async, testbed, tm


class SignOutTests(BindingCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.proxy = Proxy(testbed().relay)

    async def asyncTearDown(self):
        await super().asyncTearDown()
        self.proxy.close()

    async def behind_proxy(self):
        """A signed-in install that reaches the relay only through the proxy."""
        return await self.signed_in(FAST_TEST_OPTIONS, relay=self.proxy.url)

    def pushes_to(self, token):
        return [p for p in testbed().pushes(token) if p["status"] == 200]

    async def test_sign_out_with_the_relay_down_stops_pushes_once_it_is_back(self):
        alice = await self.behind_proxy()
        bob = await self.signed_in()
        account = alice.client.account_id()
        device_id, push_key = alice.client.device_id(), bytes(alice.client.push_key())
        token = apns_token()
        change = await alice.client.enable_fast_mode(tm.PushService.APNS, token, testbed().app_id)
        self.assertEqual(change.mode, tm.Mode.FAST)
        await bob.client.send(account, b"before")
        await eventually(lambda: self.pushes_to(token), "a push while signed in")

        self.proxy.down()
        await alice.client.sign_out()
        self.assertIsNone(alice.client.account_id())
        self.assertEqual(await alice.client.queued_unsubscribes(), 1, "the removal waits for the relay")
        self.assertNotEqual(alice.client.device_id(), device_id, "the device id is rotated")
        self.assertNotEqual(bytes(alice.client.push_key()), push_key, "the push key is rotated")
        # The relay still holds the registration meanwhile.
        await bob.client.send(account, b"while unreachable")
        await eventually(lambda: len(self.pushes_to(token)) >= 2, "pushes until the relay hears of it")

        # A restart in between: the queue is durable.
        alice.client.stop()
        alice = await self.reopen(alice, FAST_TEST_OPTIONS, relay=self.proxy.url)
        self.assertEqual(await alice.client.queued_unsubscribes(), 1)
        self.proxy.up()
        try:
            await alice.client.connect()
        except tm.TidingsError.Unreachable:
            pass
        async def sent():
            return await alice.client.queued_unsubscribes() == 0

        await eventually_async(sent, "the queued removal sent")

        before = len(self.pushes_to(token))
        await bob.client.send(account, b"after sign-out")
        testbed().settle()
        self.assertEqual(len(self.pushes_to(token)), before, "no push after the relay took the removal")

    async def test_wipe_removes_everything(self):
        d = await self.signed_in(FAST_TEST_OPTIONS)
        bob = await self.signed_in()
        token = apns_token()
        await d.client.enable_fast_mode(tm.PushService.APNS, token, testbed().app_id)
        account = d.client.account_id()
        await d.client.wipe()
        self.assertEqual(os.listdir(d.dir.name), [])
        before = len(self.pushes_to(token))
        await bob.client.send(account, b"after wipe")
        testbed().settle()
        self.assertEqual(len(self.pushes_to(token)), before)
        with self.assertRaises(tm.TidingsError.Closed):
            await d.client.sync_now()
        fresh = await self.reopen(d)
        self.assertIsNone(fresh.client.account_id())
