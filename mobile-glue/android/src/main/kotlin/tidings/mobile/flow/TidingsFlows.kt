package tidings.mobile.flow

import java.util.concurrent.CopyOnWriteArrayList
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.filter
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.map
import tidings.mobile.ClientOptions
import tidings.mobile.ConfigChange
import tidings.mobile.EventListener
import tidings.mobile.IncomingMessage
import tidings.mobile.LinkOutcome
import tidings.mobile.LinkRequest
import tidings.mobile.ModeChange
import tidings.mobile.ModeStatus
import tidings.mobile.Operation
import tidings.mobile.Progress
import tidings.mobile.PushService
import tidings.mobile.SyncSummary
import tidings.mobile.TidingsClient
import tidings.mobile.TidingsException

/**
 * A [TidingsClient]'s events as Kotlin flows, and suspend helpers whose cancellation
 * reaches the SDK.
 *
 * It is the client's [EventListener]: [open] passes it to `TidingsClient.open`, [attach]
 * installs it on a client opened elsewhere (replacing any listener; pass the old one as
 * `forward` to keep it called). Every flow here is cold and may be collected any number of
 * times: each collection gets every event from the moment it starts, buffered without
 * limit so the SDK's event thread never waits for a slow collector (apply `buffer`,
 * `conflate` or `sample` to taste). Collect on any dispatcher; hop to `Dispatchers.Main`
 * for UI.
 *
 * The client keeps this object (and so the client itself) alive until `stop()`,
 * `shutdown()` or `setListener(null)`.
 */
class TidingsFlows private constructor(private val forward: EventListener?) : EventListener {
    private val sinks = CopyOnWriteArrayList<(TidingsEvent) -> Unit>()

    /** Set last in [bind]: once it is seen non-null, [mode] is set too. */
    @Volatile
    private var bound: TidingsClient? = null

    private lateinit var mode: MutableStateFlow<ModeStatus>

    /** The client these flows are the events of. */
    val client: TidingsClient
        get() = checkNotNull(bound) { "TidingsFlows is not attached to a client yet" }

    companion object {
        /**
         * Opens the install in [stateDir] (see `TidingsClient.open`) with a [TidingsFlows]
         * as its listener. [forward] is also called for every event, before the flows.
         */
        suspend fun open(
            stateDir: String,
            stateKey: ByteArray,
            relayUrl: String,
            options: ClientOptions? = null,
            forward: EventListener? = null,
        ): TidingsFlows {
            val flows = TidingsFlows(forward)
            flows.bind(TidingsClient.open(stateDir, stateKey, relayUrl, flows, options))
            return flows
        }

        /** Makes a [TidingsFlows] the listener of an open [client]. */
        fun attach(client: TidingsClient, forward: EventListener? = null): TidingsFlows {
            val flows = TidingsFlows(forward)
            flows.bind(client)
            client.setListener(flows)
            return flows
        }
    }

    private fun bind(client: TidingsClient) {
        mode = MutableStateFlow(client.modeStatus())
        modeStatus = mode.asStateFlow()
        bound = client
    }

    // ---- flows ------------------------------------------------------------------------

    /**
     * Every event from the moment collection starts. The collector is registered before
     * the first suspension of `collect`, so an event reported after `collect` was called
     * reaches it.
     */
    val events: Flow<TidingsEvent> = flow {
        val channel = Channel<TidingsEvent>(Channel.UNLIMITED)
        val sink: (TidingsEvent) -> Unit = { channel.trySend(it) }
        sinks.add(sink)
        try {
            for (event in channel) emit(event)
        } finally {
            sinks.remove(sink)
            channel.close()
        }
    }

    /** New messages as they arrive (`onMessage`), from the moment collection starts. */
    val messages: Flow<IncomingMessage> =
        events.filterIsInstance<TidingsEvent.Message>().map { it.message }

    /**
     * The inbox, at least once: first every message still pending (received and not yet
     * acknowledged with `client.ack`), then each new one as it arrives; none twice within
     * one collection. Store each in the app's database, then `ack` it. A message is
     * pending before it is reported, so nothing falls between the two.
     */
    fun inbox(): Flow<IncomingMessage> = flow {
        val channel = Channel<IncomingMessage>(Channel.UNLIMITED)
        val sink: (TidingsEvent) -> Unit = { e -> if (e is TidingsEvent.Message) channel.trySend(e.message) }
        // Listening first, reading the pending ones second: a message reported in between
        // is in both, and is emitted once.
        sinks.add(sink)
        try {
            val pending = client.pendingMessages()
            val seen = pending.mapTo(HashSet()) { it.hash }
            for (m in pending) emit(m)
            for (m in channel) if (!seen.remove(m.hash)) emit(m)
        } finally {
            sinks.remove(sink)
            channel.close()
        }
    }

    /** Config changes made by the account's other devices (`onConfigChanged`). */
    val configChanges: Flow<ConfigChange> =
        events.filterIsInstance<TidingsEvent.ConfigChanged>().map { it.change }

    /** Fast/Slow mode changes (`onModeChanged`), e.g. an automatic fallback. */
    val modeChanges: Flow<ModeChange> =
        events.filterIsInstance<TidingsEvent.ModeChanged>().map { it.change }

    /** Devices scanning this new install's link code (`onLinkRequest`). */
    val linkRequests: Flow<LinkRequest> =
        events.filterIsInstance<TidingsEvent.LinkRequested>().map { it.request }

    /** Progress of long operations (`onProgress`), of one [operation] or of all. */
    fun progress(operation: Operation? = null): Flow<Progress> =
        events.filterIsInstance<TidingsEvent.ProgressMade>()
            .map { it.progress }
            .filter { operation == null || it.operation == operation }

    /**
     * The Fast/Slow Mode status, as `client.modeStatus()` says: read again at every mode
     * change and after this object's [enableFastMode], [disableFastMode] and [signOut].
     */
    lateinit var modeStatus: StateFlow<ModeStatus>
        private set

    /** Reads the mode status again (e.g. after a registration was renewed). */
    fun refreshModeStatus() {
        val client = bound ?: return
        // Read and published together, so concurrent refreshes publish in order.
        synchronized(mode) { mode.value = client.modeStatus() }
    }

    /**
     * New device: each scan of the link code shown (`client.beginLink`), waited for while
     * the flow is collected. The next wait starts when the collector's block returns, so
     * call `confirmLink` or `client.rejectLink()` in it. Cancelling the collector cancels
     * the wait in the SDK (see [cancellableCall]); [waitMs] is only how long one wait lasts
     * before the next begins.
     */
    fun linkScans(waitMs: ULong = 60_000uL): Flow<LinkRequest> = flow {
        while (true) {
            val request = try {
                cancellableCall { client.waitForLink(waitMs, it) }
            } catch (e: TidingsException.Timeout) {
                continue
            }
            emit(request)
        }
    }

    // ---- suspend helpers ----------------------------------------------------------------

    /** `client.restoreAccount`; cancelling the coroutine cancels the restore (no account is left). */
    suspend fun restoreAccount(phrase: String): String =
        cancellableCall { client.restoreAccount(phrase, it) }

    /** `client.syncNow`; cancelling the coroutine cancels the sync (what was fetched stays pending). */
    suspend fun syncNow(): SyncSummary = cancellableCall { client.syncNow(it) }

    /** `client.waitForLink`; cancelling the coroutine cancels the wait. */
    suspend fun waitForLink(timeoutMs: ULong): LinkRequest =
        cancellableCall { client.waitForLink(timeoutMs, it) }

    /** `client.confirmLink`; cancelling the coroutine cancels the wait (nothing adopted). */
    suspend fun confirmLink(timeoutMs: ULong): LinkOutcome =
        cancellableCall { client.confirmLink(timeoutMs, it) }

    /** `client.enableFastMode`, then [modeStatus] updated. */
    suspend fun enableFastMode(service: PushService, token: String, appId: String): ModeChange =
        try {
            client.enableFastMode(service, token, appId)
        } finally {
            refreshModeStatus()
        }

    /** `client.disableFastMode`, then [modeStatus] updated. */
    suspend fun disableFastMode() =
        try {
            client.disableFastMode()
        } finally {
            refreshModeStatus()
        }

    /** `client.signOut`, then [modeStatus] updated. */
    suspend fun signOut() =
        try {
            client.signOut()
        } finally {
            refreshModeStatus()
        }

    // ---- EventListener: called by the SDK on its event thread ---------------------------

    private fun dispatch(event: TidingsEvent) {
        for (sink in sinks) sink(event)
    }

    override fun onMessage(message: IncomingMessage) {
        try {
            forward?.onMessage(message)
        } finally {
            dispatch(TidingsEvent.Message(message))
        }
    }

    override fun onConfigChanged(change: ConfigChange) {
        try {
            forward?.onConfigChanged(change)
        } finally {
            dispatch(TidingsEvent.ConfigChanged(change))
        }
    }

    override fun onModeChanged(change: ModeChange) {
        try {
            forward?.onModeChanged(change)
        } finally {
            refreshModeStatus()
            dispatch(TidingsEvent.ModeChanged(change))
        }
    }

    override fun onLinkRequest(request: LinkRequest) {
        try {
            forward?.onLinkRequest(request)
        } finally {
            dispatch(TidingsEvent.LinkRequested(request))
        }
    }

    override fun onProgress(progress: Progress) {
        try {
            forward?.onProgress(progress)
        } finally {
            dispatch(TidingsEvent.ProgressMade(progress))
        }
    }
}
