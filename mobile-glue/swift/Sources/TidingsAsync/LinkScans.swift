import TidingsMobile

/// New device: each scan of the link code shown (`beginLink`), waited for as the
/// sequence is iterated. The next wait starts only when the loop asks for the next
/// element, so confirm (`confirmLink`) or reject (`rejectLink`) in the loop's body.
/// Cancelling the iterating Task cancels the wait in the SDK (`withCancellation`); the
/// iteration then throws `CancellationError`.
///
///     for try await scan in streams.linkScans() {
///         if await userSaysCodesMatch(scan.sas) { ...confirmLink...; break }
///         try await streams.client.rejectLink()
///     }
public struct LinkScans: AsyncSequence {
    public typealias Element = LinkRequest

    let streams: TidingsStreams
    /// How long one wait lasts before the next begins, ms.
    let waitMs: UInt64

    public func makeAsyncIterator() -> Iterator {
        Iterator(streams: streams, waitMs: waitMs)
    }

    /// Waits for one scan per `next()`.
    public struct Iterator: AsyncIteratorProtocol {
        let streams: TidingsStreams
        let waitMs: UInt64

        public mutating func next() async throws -> LinkRequest? {
            while true {
                do {
                    return try await streams.waitForLink(timeoutMs: waitMs)
                } catch TidingsError.Timeout {
                    // Nobody scanned within this wait: keep waiting until cancelled.
                    continue
                }
            }
        }
    }
}
