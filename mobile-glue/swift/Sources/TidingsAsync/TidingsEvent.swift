import TidingsMobile

/// One callback of `EventListener` as a value, in the order the client reported it.
///
/// Events are notifications: a message is also in `pendingMessages()` until acknowledged,
/// so a stream that was not being consumed misses nothing it cannot read there.
public enum TidingsEvent {
    /// `onMessage`: a new message arrived (each message once).
    case message(IncomingMessage)
    /// `onConfigChanged`: config documents changed.
    case configChanged(ConfigChange)
    /// `onModeChanged`: the Fast/Slow mode changed.
    case modeChanged(ModeChange)
    /// `onLinkRequest`: a device scanned this new install's link code.
    case linkRequest(LinkRequest)
    /// `onProgress`: a long operation progressed.
    case progress(TidingsMobile.Progress)
}

#if compiler(>=6)
// The generated records are Sendable from Swift 6 on; so, then, is this.
extension TidingsEvent: Sendable {}
#endif
