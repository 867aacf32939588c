import TidingsMobile

/// Runs one of the SDK's long calls (`restoreAccount`, `syncNow`, `waitForLink`,
/// `confirmLink`) so that cancelling the calling `Task` cancels the call inside the SDK.
///
/// The generated `async` functions do not react to Task cancellation by themselves: a
/// cancelled Task would wait for the call to end on its own (a link wait for minutes).
/// Here the call gets a `Cancellation` that is cancelled with the Task; the SDK then ends
/// the call at once with `TidingsError.Cancelled`, which reaches the caller as Swift's
/// `CancellationError`. When the awaiting code resumes, the call is over: a cancelled
/// restore has left no account behind.
///
///     let id = try await withCancellation { try await client.restoreAccount(phrase: typed, cancel: $0) }
public func withCancellation<T>(_ body: (Cancellation) async throws -> T) async throws -> T {
    let cancellation = Cancellation()
    return try await withTaskCancellationHandler {
        do {
            return try await body(cancellation)
        } catch TidingsError.Cancelled where Task.isCancelled {
            // The Task was cancelled: say so the way Swift does, not with the SDK's answer.
            throw CancellationError()
        }
    } onCancel: {
        cancellation.cancel()
    }
}
