//! The SDK's tracing output, delivered to the app's logger.
//!
//! `set_log_sink(sink, level)` installs (once per process) a tracing subscriber whose only
//! layer forwards each event at or above `level` to the sink; calling it again replaces
//! the sink and level, `None` stops forwarding. The SDK never logs a phrase word, a key, a
//! token or a clear account id at any level, so what reaches the sink can be shipped.

use std::{
    fmt::Write as _,
    sync::{
        Arc, OnceLock, PoisonError, RwLock,
        atomic::{AtomicU8, Ordering},
    },
};

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

/// A log level, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something unexpected that the SDK recovers from.
    Warn,
    /// Changes an app developer wants to see (mode changes, refusals).
    Info,
    /// Details for diagnosing a problem.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn from_tracing(level: tracing::Level) -> LogLevel {
        match level {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        }
    }

    fn rank(self) -> u8 {
        match self {
            LogLevel::Error => 1,
            LogLevel::Warn => 2,
            LogLevel::Info => 3,
            LogLevel::Debug => 4,
            LogLevel::Trace => 5,
        }
    }
}

/// What the app implements to receive the SDK's log lines (called on whatever thread
/// logged: return quickly, and do not call back into the SDK).
#[uniffi::export(with_foreign)]
pub trait LogSink: Send + Sync {
    /// One event: its level, the module it came from, and the message with its fields.
    fn log(&self, level: LogLevel, target: String, message: String);
}

/// The sink and the most verbose level forwarded (0: none).
struct Forward {
    sink: RwLock<Option<Arc<dyn LogSink>>>,
    max_rank: AtomicU8,
}

static FORWARD: OnceLock<Forward> = OnceLock::new();

fn forward() -> &'static Forward {
    FORWARD.get_or_init(|| Forward {
        sink: RwLock::new(None),
        max_rank: AtomicU8::new(0),
    })
}

/// Sends the SDK's log events at `level` and above to `sink` (`None`: stop). The first
/// call installs the process's tracing subscriber; if the app (or another library)
/// installed one before, events keep going there and this returns false.
#[uniffi::export]
pub fn set_log_sink(sink: Option<Arc<dyn LogSink>>, level: LogLevel) -> bool {
    let f = forward();
    let rank = if sink.is_some() { level.rank() } else { 0 };
    *f.sink.write().unwrap_or_else(PoisonError::into_inner) = sink;
    f.max_rank.store(rank, Ordering::SeqCst);
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| tracing_subscriber::registry().with(SinkLayer).try_init().is_ok())
}

/// The layer that hands events to the sink.
struct SinkLayer;

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let f = forward();
        let level = LogLevel::from_tracing(*event.metadata().level());
        if level.rank() > f.max_rank.load(Ordering::Relaxed) {
            return;
        }
        let Some(sink) = f.sink.read().unwrap_or_else(PoisonError::into_inner).clone() else {
            return;
        };
        let mut line = Line::default();
        event.record(&mut line);
        sink.log(level, event.metadata().target().to_owned(), line.finish());
    }
}

/// An event's message and fields as one line: `message key=value …`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_owned()
        } else {
            self.message + &self.fields
        }
    }
}

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(LogLevel, String)>>);

    impl LogSink for Collect {
        fn log(&self, level: LogLevel, _target: String, message: String) {
            self.0.lock().unwrap().push((level, message));
        }
    }

    #[test]
    fn events_at_the_chosen_level_reach_the_sink() {
        let sink = Arc::new(Collect::default());
        set_log_sink(Some(sink.clone()), LogLevel::Info);
        tracing::info!(mode = "fast", "delivery mode changed");
        tracing::debug!("too verbose");
        tracing::warn!(attempt = 3, "retrying");
        set_log_sink(None, LogLevel::Trace);
        tracing::error!("after removal");
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (LogLevel::Info, "delivery mode changed mode=fast".to_owned()),
                (LogLevel::Warn, "retrying attempt=3".to_owned()),
            ]
        );
    }
}
