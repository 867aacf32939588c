// The Kotlin layer (mobile-glue/android/src/main/kotlin/tidings/mobile/flow) on the JVM,
// against the real library and a real relay: the tidings-testbed binary (TIDINGS_TESTBED),
// which prints its relay URL as one JSON line and runs until its stdin closes.
// Compiled with the generated bindings and run by scripts/kotlin-check.sh.
//
// Every wait is bounded (WAIT_MS); nothing asserts on timing.
package flowtest

import java.io.File
import java.nio.file.Files
import java.security.SecureRandom
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.async
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.collect
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import tidings.mobile.IncomingMessage
import tidings.mobile.LinkRequest
import tidings.mobile.Mode
import tidings.mobile.Operation
import tidings.mobile.ProgressStage
import tidings.mobile.PushService
import tidings.mobile.TidingsException
import tidings.mobile.defaultClientOptions
import tidings.mobile.flow.TidingsFlows
import tidings.mobile.flow.cancellableCall

const val WAIT_MS = 45_000L

/** A wait no test should reach: the SDK call it stands for must be cancelled long before. */
const val FOREVER_MS = 600_000uL

class Failed(what: String) : Exception(what)

fun check(ok: Boolean, what: String) {
    if (!ok) throw Failed(what)
}

/** The tidings-testbed process. */
class Testbed(binary: String) : AutoCloseable {
    private val process = ProcessBuilder(binary)
        .redirectError(ProcessBuilder.Redirect.INHERIT)
        .start()
    val relay: String
    val appId: String

    init {
        val hello = process.inputStream.bufferedReader().readLine()
            ?: error("tidings-testbed exited before announcing its endpoints")
        relay = field(hello, "relay")
        appId = field(hello, "app_id")
    }

    private fun field(json: String, name: String): String =
        Regex("\"$name\"\\s*:\\s*\"([^\"]*)\"").find(json)?.groupValues?.get(1)
            ?: error("no $name in the testbed's hello: $json")

    override fun close() {
        process.outputStream.close()
        if (!process.waitFor(WAIT_MS, TimeUnit.MILLISECONDS)) process.destroyForcibly().waitFor()
    }
}

class Installs(private val relay: String) {
    private val opened = mutableListOf<TidingsFlows>()
    private val random = SecureRandom()

    // Short long-polls and retries so nothing waits long; production uses the defaults.
    private val options = defaultClientOptions().copy(pollWaitMs = 2_000u, retryBackoffMs = 200uL)

    suspend fun open(): TidingsFlows {
        val dir = Files.createTempDirectory("tidings-flows").toString()
        val key = ByteArray(32).also { random.nextBytes(it) }
        return TidingsFlows.open(dir, key, relay, options).also { opened.add(it) }
    }

    suspend fun shutdown() {
        for (flows in opened) flows.client.shutdown()
    }
}

/** A Flow collects messages another client sent; the inbox flow delivers at least once. */
suspend fun CoroutineScope.messagesFlow(installs: Installs) {
    val alice = installs.open()
    val aliceId = alice.client.createAccount()
    val bob = installs.open()
    val bobId = bob.client.createAccount()
    bob.client.connect()

    val received = Channel<IncomingMessage>(Channel.UNLIMITED)
    val collector = launch(start = CoroutineStart.UNDISPATCHED) { bob.inbox().collect { received.send(it) } }
    alice.client.sendMessage(bobId, "first".toByteArray())
    val first = withTimeout(WAIT_MS) { received.receive() }
    check(first.plaintext?.decodeToString() == "first", "the inbox flow collects alice's message")
    check(first.senderAccountId == aliceId, "the message names its sender")

    // Collecting now: this one can only come through the live events.
    val live = async(start = CoroutineStart.UNDISPATCHED) { bob.messages.first() }
    alice.client.sendMessage(bobId, "second".toByteArray())
    val second = withTimeout(WAIT_MS) { received.receive() }
    check(second.plaintext?.decodeToString() == "second", "the inbox flow collects a live message")
    check(withTimeout(WAIT_MS) { live.await() }.hash == second.hash, "the messages flow collects it too")
    collector.cancelAndJoin()

    // Not acknowledged: a new collection starts with both, then ack removes them.
    val again = withTimeout(WAIT_MS) { bob.inbox().take(2).toList() }
    check(again.map { it.hash } == listOf(first.hash, second.hash), "pending messages come first, once each")
    check(bob.client.ack(listOf(first.hash, second.hash)) == 2u, "both were pending")
    check(bob.client.pendingMessages().isEmpty(), "acknowledged messages are gone")
}

/** Cancelling the collecting coroutine cancels the SDK call under the flow. */
suspend fun CoroutineScope.cancellation(installs: Installs) {
    val linked = installs.open()
    linked.client.createAccount()
    val newDevice = installs.open()
    // A call left running would take the next scan only when it wins a race against the
    // next wait, so the check is made a few times (each with a new link code).
    repeat(3) { round ->
        val qr = newDevice.client.beginLink("kotlin flow test $round")

        // Undispatched: by the time launch returns, the collector is suspended inside
        // waitForLink, that is the SDK is long-polling the link mailbox for it.
        val scans = mutableListOf<LinkRequest>()
        val collector = launch(start = CoroutineStart.UNDISPATCHED) {
            newDevice.linkScans(waitMs = FOREVER_MS).collect { scans.add(it) }
        }
        check(collector.isActive, "the collector waits for a scan")
        withTimeout(WAIT_MS) { collector.cancelAndJoin() }
        check(scans.isEmpty(), "nothing was scanned")

        // cancelAndJoin returned only once the SDK's wait had ended: a scan made now is
        // not taken by it (it would move the link mailbox's cursor past the hello) but by
        // the next wait.
        val inspection = linked.client.inspectLink(qr)
        val request = withTimeout(WAIT_MS) { newDevice.waitForLink(WAIT_MS.toULong()) }
        check(request.sas == inspection.sas, "the next wait gets the scan the cancelled one did not take")
    }

    // The same, watched from inside: the SDK call itself ends with Cancelled.
    val ended = CompletableDeferred<Throwable?>()
    val call = launch(start = CoroutineStart.UNDISPATCHED) {
        cancellableCall { cancel ->
            try {
                newDevice.client.waitForLink(FOREVER_MS, cancel).also { ended.complete(null) }
            } catch (e: Throwable) {
                ended.complete(e)
                throw e
            }
        }
    }
    withTimeout(WAIT_MS) { call.cancelAndJoin() }
    check(ended.isCompleted, "the SDK call had returned when cancelAndJoin did")
    check(ended.await() is TidingsException.Cancelled, "the SDK call ended with Cancelled")
    check(call.isCancelled, "the coroutine ends cancelled, not failed")
}

/** The mode status is a StateFlow; mode changes are a Flow. */
suspend fun CoroutineScope.modeStatusFlow(installs: Installs, appId: String) {
    val client = installs.open()
    client.client.createAccount()
    client.client.connect()
    check(client.modeStatus.value.mode == Mode.SLOW, "a new install starts in Slow Mode")

    val change = async(start = CoroutineStart.UNDISPATCHED) { client.modeChanges.first() }
    val enabled = client.enableFastMode(PushService.FCM, "kotlin-flows-token", appId)
    check(enabled.mode == Mode.FAST, "the testbed's relay takes the registration: $enabled")
    check(client.modeStatus.value.mode == Mode.FAST, "the StateFlow follows enableFastMode")
    check(withTimeout(WAIT_MS) { change.await() }.mode == Mode.FAST, "the change is reported as a Flow")

    client.disableFastMode()
    withTimeout(WAIT_MS) { client.modeStatus.first { it.mode == Mode.SLOW } }
}

/** Progress of a restore, as a Flow. */
suspend fun CoroutineScope.progressFlow(installs: Installs) {
    val original = installs.open()
    val id = original.client.createAccount()
    original.client.setDisplayName("Ada")
    val restored = installs.open()
    val done = async(start = CoroutineStart.UNDISPATCHED) {
        restored.progress(Operation.RESTORE).first { it.stage == ProgressStage.DONE }
    }
    check(restored.restoreAccount(original.client.phrase()!!) == id, "the restore finds the account")
    withTimeout(WAIT_MS) { done.await() }
    check(restored.client.profile().displayName == "Ada", "the restore brought the profile")
}

fun main() {
    val binary = System.getenv("TIDINGS_TESTBED") ?: "target/debug/tidings-testbed"
    if (!File(binary).canExecute()) {
        System.err.println("FAILED: no tidings-testbed at $binary (set TIDINGS_TESTBED)")
        exitProcess(1)
    }
    val tests = listOf<Pair<String, suspend CoroutineScope.(Installs, Testbed) -> Unit>>(
        "a Flow collects messages sent by another client" to { i, _ -> messagesFlow(i) },
        "cancelling the collector cancels the SDK call" to { i, _ -> cancellation(i) },
        "mode status as a StateFlow" to { i, t -> modeStatusFlow(i, t.appId) },
        "restore progress as a Flow" to { i, _ -> progressFlow(i) },
    )
    var passed = 0
    var failed = 0
    Testbed(binary).use { testbed ->
        for ((name, test) in tests) {
            val installs = Installs(testbed.relay)
            try {
                runBlocking { withTimeout(4 * WAIT_MS) { test(installs, testbed) } }
                passed++
                println("ok: $name")
            } catch (e: Throwable) {
                failed++
                println("FAILED: $name: $e")
            } finally {
                runBlocking { installs.shutdown() }
            }
        }
    }
    println("kotlin flows: $passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
