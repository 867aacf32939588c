"""The shared harness of the Python binding tests (`test_*.py` beside this file): the
`tidings-testbed` process (a real relay whose Fast Mode pushes go to the mock APNs and
FCM), an event recorder, one install per `Device`, and the runner `run.py` uses.

Run by scripts/test.sh, which builds and generates everything first. By hand:

    scripts/bindings.sh --python target/bindings/python
    cargo build -p tidings-tests --bin tidings-testbed
    TIDINGS_BINDINGS_DIR=target/bindings/python TIDINGS_TESTBED=target/debug/tidings-testbed \\
        python3 mobile-glue/tests/python/run.py [test_file_stem ...]

Optional: TIDINGS_BINDGEN and TIDINGS_LIBRARY (the uniffi-bindgen binary and the cdylib)
enable the check that the committed Swift and Kotlin bindings are up to date.

Every wait is bounded (WAIT seconds); nothing asserts on timing.
"""

import asyncio
import filecmp
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BINDINGS_DIR = os.path.abspath(os.environ.get("TIDINGS_BINDINGS_DIR", os.path.join(ROOT, "target", "bindings", "python")))
sys.path.insert(0, BINDINGS_DIR)

import tidings_mobile as tm  # noqa: E402  (the path is set just above)

WAIT = 45.0
ABANDON = " ".join(["abandon"] * 11 + ["about"])

# Short intervals so fallbacks happen within a test; production uses the defaults.
FAST_TEST_OPTIONS = tm.ClientOptions(
    poll_wait_ms=2_000,
    fast_check_interval_ms=300,
    push_grace_ms=1_500,
    missed_push_limit=3,
    renew_at_percent=50,
    retry_backoff_ms=200,
    message_ttl_ms=0,
    trust=tm.TrustStore.PLATFORM,
    extra_ca_roots_pem=[],
    request_timeout_ms=30_000,
)

TESTBED = None


def testbed():
    """The one testbed of this run, started on first use."""
    global TESTBED
    if TESTBED is None:
        binary = os.environ.get("TIDINGS_TESTBED", os.path.join(ROOT, "target", "debug", "tidings-testbed"))
        TESTBED = Testbed(binary)
    return TESTBED


class Testbed:
    """The tidings-testbed process: a relay with Fast Mode and the mock providers."""

    def __init__(self, binary):
        self.proc = subprocess.Popen(
            [binary],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("tidings-testbed exited before announcing its endpoints")
        hello = json.loads(line)
        self.relay = hello["relay"]
        self.control = hello["control"]
        self.app_id = hello["app_id"]

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _call(self, method, path):
        req = urllib.request.Request(self.control + path, method=method)
        with urllib.request.urlopen(req, timeout=WAIT + 15) as resp:
            return resp.read()

    def pushes(self, token=None):
        all_pushes = json.loads(self._call("GET", "/pushes"))
        return [p for p in all_pushes if token is None or p["token"] == token]

    def web_push_subscription(self):
        """A new push resource at the mock Web Push service, as a UnifiedPush distributor
        hands one to an app: `{"id", "endpoint"}`. The keys are the SDK's."""
        return json.loads(self._call("POST", "/webpush/subscription"))

    def mark_dead(self, provider, token):
        self._call("POST", f"/dead/{provider}/{token}")

    def settle(self):
        self._call("POST", "/settle")


def close_testbed():
    global TESTBED
    if TESTBED is not None:
        TESTBED.close()
        TESTBED = None


class Recorder(tm.EventListener):
    """Records every event; waits for conditions on them."""

    def __init__(self):
        self.cond = threading.Condition()
        self.messages = []
        self.configs = []
        self.modes = []
        self.links = []
        self.progress = []

    def _add(self, bucket, item):
        with self.cond:
            bucket.append(item)
            self.cond.notify_all()

    def on_message(self, message):
        self._add(self.messages, message)

    def on_config_changed(self, change):
        self._add(self.configs, change)

    def on_mode_changed(self, change):
        self._add(self.modes, change)

    def on_link_request(self, request):
        self._add(self.links, request)

    def on_progress(self, progress):
        self._add(self.progress, progress)

    async def until(self, predicate, what):
        """Waits (without blocking the event loop) until `predicate()` holds."""

        def locked():
            with self.cond:
                return predicate()

        await eventually(locked, what)

    def message_datas(self):
        with self.cond:
            return [bytes(m.data) for m in self.messages]


async def eventually_async(check, what):
    """Awaits `check()` (async) until it is truthy, bounded by WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def eventually(check, what):
    """Polls `check()` (sync) until it is truthy, bounded by WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class Device:
    """One install: a state dir, a key, a client and its recorder. Made with
    `await Device.create(options)` (opening a client is async)."""

    def __init__(self, directory, key, events, client):
        self.dir, self.key, self.events, self.client = directory, key, events, client

    @classmethod
    async def create(cls, options=None, relay=None):
        directory = tempfile.TemporaryDirectory(prefix="tidings-py-")
        key = secrets.token_bytes(32)
        events = Recorder()
        client = await tm.TidingsClient.open(directory.name, key, relay or testbed().relay, events, options)
        return cls(directory, key, events, client)

    @classmethod
    async def reopen(cls, other, options=None, relay=None):
        """The same install (state dir and key) opened again, as after an app restart."""
        events = Recorder()
        client = await tm.TidingsClient.open(other.dir.name, other.key, relay or testbed().relay, events, options)
        return cls(other.dir, other.key, events, client)

    def close(self):
        if self.client is not None:
            self.client.stop()
        self.client = None
        # Shared with reopened installs; cleaning up twice is harmless.
        self.dir.cleanup()


class Proxy:
    """A TCP forwarder in front of the testbed's relay that can be taken down: while
    down, it cuts every open connection and refuses new ones (accepts and closes at once),
    which a client sees as an unreachable relay."""

    def __init__(self, target_url):
        host, port = target_url.split("://", 1)[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.is_up = True
        self.open = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.is_up:
                    conn.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    conn.close()
                    continue
                upstream.settimeout(None)
                self.open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self):
        with self.lock:
            self.is_up = False
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.open = []

    def up(self):
        with self.lock:
            self.is_up = True

    def close(self):
        self.closed = True
        self.down()
        self.listener.close()


def apns_token():
    return secrets.token_hex(32)


class BindingCase(unittest.IsolatedAsyncioTestCase):
    """A test with installs that are closed after it."""

    async def asyncSetUp(self):
        # Debug mode flags every FFI call that derives keys (PBKDF2) as a slow callback.
        asyncio.get_running_loop().set_debug(False)
        self.devices = []

    async def asyncTearDown(self):
        for d in self.devices:
            d.close()

    async def device(self, options=None, relay=None):
        d = await Device.create(options, relay)
        self.devices.append(d)
        return d

    async def reopen(self, other, options=None, relay=None):
        d = await Device.reopen(other, options, relay)
        self.devices.append(d)
        return d

    async def signed_in(self, options=None, relay=None):
        d = await self.device(options, relay)
        await d.client.create_account()
        await d.client.connect()
        return d


def differing_files(a, b):
    """Relative paths that differ between two trees (missing on either side included)."""
    cmp = filecmp.dircmp(a, b)
    out = [os.path.join(a, f) for f in cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files]
    for sub in cmp.common_dirs:
        out += differing_files(os.path.join(a, sub), os.path.join(b, sub))
    return out


def run(modules):
    """Runs the tests of `modules` against one testbed; prints the closing line."""
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromModule(m) for m in modules)
    try:
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    finally:
        close_testbed()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    # The closing line test runners are judged by.
    print(f"bindings: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1
