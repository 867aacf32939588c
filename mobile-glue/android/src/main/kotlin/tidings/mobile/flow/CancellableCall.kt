package tidings.mobile.flow

import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import tidings.mobile.Cancellation
import tidings.mobile.TidingsException

/**
 * Runs one of the SDK's long calls (`restoreAccount`, `syncNow`, `waitForLink`,
 * `confirmLink`) so that cancelling the calling coroutine cancels the call inside the SDK
 * and returns only once the call has ended.
 *
 * The generated suspend functions already drop the call when their coroutine is
 * cancelled, but the SDK stops it asynchronously, at its next await, after the coroutine
 * has moved on. Here the call gets a [Cancellation] that is cancelled with the coroutine,
 * and the coroutine waits (briefly: the SDK answers a cancellation at once) until the call
 * has returned `Cancelled`. So when `job.cancelAndJoin()` returns, the call is over: a
 * cancelled restore has left no account behind, a cancelled `waitForLink` consumes no
 * later scan.
 *
 * The coroutine then ends with a `CancellationException`, as cancelled coroutines do, not
 * with the SDK's `TidingsException.Cancelled`.
 */
suspend fun <T> cancellableCall(block: suspend (Cancellation) -> T): T {
    val cancellation = Cancellation()
    try {
        return coroutineScope {
            // Started undispatched so the handler is armed before the call begins.
            val watcher = launch(start = CoroutineStart.UNDISPATCHED) {
                try {
                    awaitCancellation()
                } finally {
                    cancellation.cancel()
                }
            }
            try {
                // Not cancellable itself: the call must be allowed to return its Cancelled.
                withContext(NonCancellable) { block(cancellation) }
            } catch (e: TidingsException.Cancelled) {
                // This coroutine was cancelled: report that, not the SDK's answer to it.
                ensureActive()
                throw e
            } finally {
                watcher.cancel()
            }
        }
    } finally {
        // coroutineScope returned only after the watcher ended: nothing uses it any more.
        cancellation.destroy()
    }
}
