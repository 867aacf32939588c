package tidings.mobile.flow

import tidings.mobile.ConfigChange
import tidings.mobile.IncomingMessage
import tidings.mobile.LinkRequest
import tidings.mobile.ModeChange
import tidings.mobile.Progress

/**
 * One callback of [tidings.mobile.EventListener] as a value, in the order the client
 * reported it. Events are notifications: a message is also in `pendingMessages()` until
 * acknowledged, so a collector that was not running misses nothing it cannot read there.
 */
sealed interface TidingsEvent {
    /** `onMessage`: a new message arrived (each message once). */
    data class Message(val message: IncomingMessage) : TidingsEvent

    /** `onConfigChanged`: config documents changed. */
    data class ConfigChanged(val change: ConfigChange) : TidingsEvent

    /** `onModeChanged`: the Fast/Slow mode changed. */
    data class ModeChanged(val change: ModeChange) : TidingsEvent

    /** `onLinkRequest`: a device scanned this new install's link code. */
    data class LinkRequested(val request: LinkRequest) : TidingsEvent

    /** `onProgress`: a long operation progressed. */
    data class ProgressMade(val progress: Progress) : TidingsEvent
}
