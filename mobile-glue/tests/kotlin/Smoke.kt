// Compiled together with the generated bindings (mobile-glue/bindings/kotlin) against JNA
// and run on the JVM by scripts/kotlin-check.sh: proves the Kotlin compiles and talks to
// the library (typed exceptions, records, objects, a suspend function).
import kotlinx.coroutines.runBlocking
import tidings.mobile.*
import java.nio.file.Files
import kotlin.system.exitProcess

fun check(ok: Boolean, what: String) {
    if (!ok) {
        System.err.println("FAILED: $what")
        exitProcess(1)
    }
}

fun main() {
    val abandon = List(11) { "abandon" }.joinToString(" ") + " about"
    check(checkPhrase(abandon).startsWith("01"), "checkPhrase returns the account id")
    try {
        checkPhrase(abandon.replace("about", "abuot"))
        check(false, "a mistyped word throws")
    } catch (e: TidingsException.BadWord) {
        check(e.position == 12u, "BadWord names the position")
        check(!e.message.orEmpty().contains("abuot") && !e.message.orEmpty().contains("about"), "no phrase word in the message")
        check(suggestWords(abandon.replace("about", "abuot"), e.position).first() == "about", "suggestWords")
    }
    try {
        checkPhrase(abandon.replace("about", "abandon"))
        check(false, "a bad checksum throws")
    } catch (e: TidingsException.BadChecksum) {
    }
    try {
        decryptPush("not base64!", ByteArray(32))
        check(false, "a damaged push throws")
    } catch (e: TidingsException.PushMalformed) {
    }

    val dir = Files.createTempDirectory("tidings-kt").toString()
    val key = ByteArray(32) { it.toByte() }
    runBlocking {
        val client = TidingsClient.open(dir, key, "http://127.0.0.1:9", null, defaultClientOptions())
        val id = client.createAccount()
        check(client.accountId() == id && client.phrase()!!.split(" ").size == 12, "account")
        check(pushKeyFromState(dir, key).contentEquals(client.pushKey()), "push key from state")
        check(client.pendingMessages().isEmpty(), "no pending messages")
        try {
            client.send(id, "hi".toByteArray())
            check(false, "sending with no relay throws")
        } catch (e: TidingsException.Unreachable) {
        }
        val cancel = Cancellation()
        cancel.cancel()
        try {
            client.syncNow(cancel)
            check(false, "a cancelled sync throws")
        } catch (e: TidingsException.Cancelled) {
        }
        client.shutdown()
    }
    println("kotlin bindings: 1 passed, 0 failed")
}
