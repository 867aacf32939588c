import Foundation
import TidingsMobile

/// A `TidingsClient`'s events as `AsyncStream`s, and `async` helpers whose Task
/// cancellation reaches the SDK.
///
/// It is the client's `EventListener`: `open` passes it to `TidingsClient.open`, `attach`
/// installs it on a client opened elsewhere (replacing any listener; pass the old one as
/// `forward` to keep it called). Each stream method returns a new stream that receives
/// every event from the moment the method returns, buffered without limit so the SDK's
/// event thread never waits for a slow consumer; the stream stops receiving when its
/// consuming Task ends or the stream is dropped. Consume on any Task; hop to the main
/// actor for UI.
///
/// The client keeps this object (and so itself) alive until `stop()`, `shutdown()` or
/// `setListener(listener: nil)`.
///
///     let tidings = try await TidingsStreams.open(stateDir: dir, stateKey: key, relayUrl: url)
///     Task { for await message in tidings.inbox() { await store(message); _ = try? await tidings.client.ack(hashes: [message.hash]) } }
///     Task { for await status in tidings.modeStatusUpdates() { await MainActor.run { banner.update(status) } } }
public final class TidingsStreams: EventListener, @unchecked Sendable {
    // Guards every var below (the SDK calls the listener on its own thread).
    private let lock = NSLock()
    private var sinks: [UUID: (TidingsEvent) -> Void] = [:]
    private var statusSinks: [UUID: (ModeStatus) -> Void] = [:]
    private var bound: TidingsClient?
    private var status: ModeStatus?
    private let forward: EventListener?

    private init(forward: EventListener?) {
        self.forward = forward
    }

    /// Opens the install in `stateDir` (see `TidingsClient.open`) with a `TidingsStreams`
    /// as its listener. `forward` is also called for every event, before the streams.
    public static func open(
        stateDir: String,
        stateKey: Data,
        relayUrl: String,
        options: ClientOptions? = nil,
        forward: EventListener? = nil
    ) async throws -> TidingsStreams {
        let streams = TidingsStreams(forward: forward)
        let client = try await TidingsClient.open(
            stateDir: stateDir, stateKey: stateKey, relayUrl: relayUrl,
            listener: streams, options: options)
        streams.bind(client)
        return streams
    }

    /// Makes a `TidingsStreams` the listener of an open `client`.
    public static func attach(_ client: TidingsClient, forward: EventListener? = nil) -> TidingsStreams {
        let streams = TidingsStreams(forward: forward)
        streams.bind(client)
        client.setListener(listener: streams)
        return streams
    }

    /// The client these streams are the events of.
    public var client: TidingsClient {
        guard let client = locked({ self.bound }) else {
            // open and attach bind before they return the object: nobody else has one.
            preconditionFailure("TidingsStreams is not bound to a client")
        }
        return client
    }

    private func bind(_ client: TidingsClient) {
        let current = client.modeStatus()
        locked {
            self.bound = client
            self.status = current
        }
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    // MARK: Streams

    /// Every event.
    public func events() -> AsyncStream<TidingsEvent> {
        stream { (event: TidingsEvent) -> TidingsEvent? in event }
    }

    /// New messages as they arrive (`onMessage`).
    public func messages() -> AsyncStream<IncomingMessage> {
        stream { (event: TidingsEvent) -> IncomingMessage? in
            if case let .message(message) = event { return message }
            return nil
        }
    }

    /// The inbox, at least once: first every message still pending (received and not yet
    /// acknowledged with `client.ack`), then each new one as it arrives; none twice within
    /// one stream. Store each in the app's database, then `ack` it. A message is pending
    /// before it is reported, so nothing falls between the two.
    public func inbox() -> AsyncStream<IncomingMessage> {
        AsyncStream(bufferingPolicy: .unbounded) { continuation in
            let gate = InboxGate(continuation)
            // Listening first, reading the pending ones second: a message reported in
            // between is in both, and is yielded once.
            let id = self.addSink { event in
                if case let .message(message) = event { gate.live(message) }
            }
            continuation.onTermination = { [weak self] _ in self?.removeSink(id) }
            gate.start(pending: self.client.pendingMessages())
        }
    }

    /// Config changes made by the account's other devices (`onConfigChanged`).
    public func configChanges() -> AsyncStream<ConfigChange> {
        stream { (event: TidingsEvent) -> ConfigChange? in
            if case let .configChanged(change) = event { return change }
            return nil
        }
    }

    /// Fast/Slow mode changes (`onModeChanged`), e.g. an automatic fallback.
    public func modeChanges() -> AsyncStream<ModeChange> {
        stream { (event: TidingsEvent) -> ModeChange? in
            if case let .modeChanged(change) = event { return change }
            return nil
        }
    }

    /// Devices scanning this new install's link code (`onLinkRequest`).
    public func linkRequests() -> AsyncStream<LinkRequest> {
        stream { (event: TidingsEvent) -> LinkRequest? in
            if case let .linkRequest(request) = event { return request }
            return nil
        }
    }

    /// Progress of long operations (`onProgress`), of one `operation` or of all.
    public func progress(of operation: TidingsMobile.Operation? = nil) -> AsyncStream<TidingsMobile.Progress> {
        stream { (event: TidingsEvent) -> TidingsMobile.Progress? in
            guard case let .progress(progress) = event else { return nil }
            return operation == nil || progress.operation == operation ? progress : nil
        }
    }

    /// New device: each scan of the link code, waited for as the sequence is iterated
    /// (see `LinkScans`). `waitMs` is how long one wait lasts before the next begins.
    public func linkScans(waitMs: UInt64 = 60_000) -> LinkScans {
        LinkScans(streams: self, waitMs: waitMs)
    }

    // MARK: Mode status

    /// The Fast/Slow Mode status, as `client.modeStatus()` said when last read: at every
    /// mode change and after this object's `enableFastMode`, `disableFastMode` and
    /// `signOut`.
    public var modeStatus: ModeStatus {
        guard let current = locked({ self.status }) else { return client.modeStatus() }
        return current
    }

    /// The mode status now, then each time it is read again; a slow consumer gets only the
    /// newest (like a Kotlin `StateFlow`).
    public func modeStatusUpdates() -> AsyncStream<ModeStatus> {
        AsyncStream(bufferingPolicy: .bufferingNewest(1)) { continuation in
            let id = UUID()
            self.locked {
                self.statusSinks[id] = { continuation.yield($0) }
                if let current = self.status { continuation.yield(current) }
            }
            continuation.onTermination = { [weak self] _ in self?.removeStatusSink(id) }
        }
    }

    /// Reads the mode status again (e.g. after a registration was renewed).
    public func refreshModeStatus() {
        guard let client = locked({ self.bound }) else { return }
        // Read and published under the lock, so concurrent refreshes publish in order.
        locked {
            let current = client.modeStatus()
            self.status = current
            for sink in self.statusSinks.values { sink(current) }
        }
    }

    // MARK: Async helpers

    /// `client.restoreAccount`; cancelling the Task cancels the restore (no account is left).
    public func restoreAccount(phrase: String) async throws -> String {
        try await withCancellation { try await client.restoreAccount(phrase: phrase, cancel: $0) }
    }

    /// `client.syncNow`; cancelling the Task cancels the sync (what was fetched stays pending).
    public func syncNow() async throws -> SyncSummary {
        try await withCancellation { try await client.syncNow(cancel: $0) }
    }

    /// `client.waitForLink`; cancelling the Task cancels the wait.
    public func waitForLink(timeoutMs: UInt64) async throws -> LinkRequest {
        try await withCancellation { try await client.waitForLink(timeoutMs: timeoutMs, cancel: $0) }
    }

    /// `client.confirmLink`; cancelling the Task cancels the wait (nothing is adopted).
    public func confirmLink(timeoutMs: UInt64) async throws -> LinkOutcome {
        try await withCancellation { try await client.confirmLink(timeoutMs: timeoutMs, cancel: $0) }
    }

    /// `client.enableFastMode`, then `modeStatus` read again.
    public func enableFastMode(service: PushService, token: String, appId: String) async throws -> ModeChange {
        defer { refreshModeStatus() }
        return try await client.enableFastMode(service: service, token: token, appId: appId)
    }

    /// `client.disableFastMode`, then `modeStatus` read again.
    public func disableFastMode() async throws {
        defer { refreshModeStatus() }
        try await client.disableFastMode()
    }

    /// `client.signOut`, then `modeStatus` read again.
    public func signOut() async throws {
        defer { refreshModeStatus() }
        try await client.signOut()
    }

    // MARK: EventListener (called by the SDK on its event thread)

    public func onMessage(message: IncomingMessage) {
        forward?.onMessage(message: message)
        dispatch(.message(message))
    }

    public func onConfigChanged(change: ConfigChange) {
        forward?.onConfigChanged(change: change)
        dispatch(.configChanged(change))
    }

    public func onModeChanged(change: ModeChange) {
        forward?.onModeChanged(change: change)
        refreshModeStatus()
        dispatch(.modeChanged(change))
    }

    public func onLinkRequest(request: LinkRequest) {
        forward?.onLinkRequest(request: request)
        dispatch(.linkRequest(request))
    }

    public func onProgress(progress: TidingsMobile.Progress) {
        forward?.onProgress(progress: progress)
        dispatch(.progress(progress))
    }

    // MARK: Plumbing

    private func stream<T>(_ pick: @escaping (TidingsEvent) -> T?) -> AsyncStream<T> {
        AsyncStream(bufferingPolicy: .unbounded) { continuation in
            let id = self.addSink { event in
                if let value = pick(event) { continuation.yield(value) }
            }
            continuation.onTermination = { [weak self] _ in self?.removeSink(id) }
        }
    }

    private func addSink(_ sink: @escaping (TidingsEvent) -> Void) -> UUID {
        let id = UUID()
        locked { self.sinks[id] = sink }
        return id
    }

    private func removeSink(_ id: UUID) {
        locked { self.sinks[id] = nil }
    }

    private func removeStatusSink(_ id: UUID) {
        locked { self.statusSinks[id] = nil }
    }

    private func dispatch(_ event: TidingsEvent) {
        // Called outside the lock: a consumer's stream may be ending (onTermination takes
        // the lock) while an event is delivered.
        let current = locked { Array(self.sinks.values) }
        for sink in current { sink(event) }
    }
}

/// The inbox stream's order: pending messages first, live ones after, each once.
private final class InboxGate: @unchecked Sendable {
    private let lock = NSLock()
    private let continuation: AsyncStream<IncomingMessage>.Continuation
    private var started = false
    /// Live messages reported before the pending ones were read.
    private var early: [IncomingMessage] = []
    /// Hashes of the pending messages not yet seen live.
    private var pending: Set<String> = []

    init(_ continuation: AsyncStream<IncomingMessage>.Continuation) {
        self.continuation = continuation
    }

    func live(_ message: IncomingMessage) {
        lock.lock()
        defer { lock.unlock() }
        if started {
            yieldUnlessPending(message)
        } else {
            early.append(message)
        }
    }

    func start(pending messages: [IncomingMessage]) {
        lock.lock()
        defer { lock.unlock() }
        pending = Set(messages.map { $0.hash })
        for message in messages { continuation.yield(message) }
        for message in early { yieldUnlessPending(message) }
        early = []
        started = true
    }

    private func yieldUnlessPending(_ message: IncomingMessage) {
        if pending.remove(message.hash) == nil { continuation.yield(message) }
    }
}
