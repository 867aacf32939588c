//! Events to the app: a foreign callback interface, called from one dedicated thread in
//! the order the events happened.
//!
//! A dedicated thread keeps the app's callbacks (which may take locks, touch a database,
//! or for Python wait for the GIL) from stalling the runtime that does the I/O, and keeps
//! the order: a message is never reported before the mode change that preceded it.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
};

use crate::types::{ConfigChange, IncomingMessage, LinkRequest, ModeChange, Progress};

/// What the app implements to hear from the client. Every method is called on one
/// background thread, never on the caller's: dispatch to the UI thread as needed, and
/// return quickly.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// A new message arrived (by push or poll; each message once).
    fn on_message(&self, message: IncomingMessage);
    /// Config documents changed (another device's change, or a restore).
    fn on_config_changed(&self, change: ConfigChange);
    /// The Fast/Slow mode changed.
    fn on_mode_changed(&self, change: ModeChange);
    /// A device scanned this new install's link code: show the code, ask the user.
    fn on_link_request(&self, request: LinkRequest);
    /// A long operation progressed.
    fn on_progress(&self, progress: Progress);
}

/// One event, queued for the dispatcher thread.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Message(IncomingMessage),
    ConfigChanged(ConfigChange),
    ModeChanged(ModeChange),
    LinkRequest(LinkRequest),
    Progress(Progress),
}

type Slot = Arc<Mutex<Option<Arc<dyn EventListener>>>>;

/// The sending side; cheap to clone. Events sent while no listener is set are dropped.
#[derive(Clone)]
pub(crate) struct Events {
    tx: mpsc::Sender<(Arc<dyn EventListener>, Event)>,
    listener: Slot,
    /// Set by `close`: queued events are dropped instead of delivered.
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Starts the dispatcher thread; it ends when the last `Events` clone is dropped.
    pub(crate) fn start(listener: Option<Arc<dyn EventListener>>) -> Events {
        let (tx, rx) = mpsc::channel();
        let listener: Slot = Arc::new(Mutex::new(listener));
        let closed = Arc::new(AtomicBool::new(false));
        let dispatcher_closed = closed.clone();
        let spawned = thread::Builder::new()
            .name("tidings-events".into())
            .spawn(move || dispatch(&rx, &dispatcher_closed));
        if let Err(e) = spawned {
            // Without the thread, events are dropped (send fails); the API still works.
            tracing::error!(error = %e, "cannot start the event thread; events will not be reported");
        }
        Events { tx, listener, closed }
    }

    /// Stops reporting for good: the app may be tearing down (a foreign runtime called
    /// back after it ended can abort the process), so queued events are dropped too.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.set_listener(None);
    }

    /// Replaces the listener (`None`: stop reporting).
    pub(crate) fn set_listener(&self, listener: Option<Arc<dyn EventListener>>) {
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = listener;
    }

    /// Queues an event for the listener set now.
    pub(crate) fn send(&self, event: Event) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(listener) = listener {
            // Fails only when the dispatcher thread is gone; nothing can report that.
            let _ = self.tx.send((listener, event));
        }
    }
}

fn dispatch(rx: &mpsc::Receiver<(Arc<dyn EventListener>, Event)>, closed: &AtomicBool) {
    while let Ok((listener, event)) = rx.recv() {
        if closed.load(Ordering::SeqCst) {
            continue;
        }
        // A callback that throws on the foreign side surfaces as a panic here; one bad
        // callback must not end the reporting of every later event.
        let outcome = catch_unwind(AssertUnwindSafe(|| match event {
            Event::Message(m) => listener.on_message(m),
            Event::ConfigChanged(c) => listener.on_config_changed(c),
            Event::ModeChanged(c) => listener.on_mode_changed(c),
            Event::LinkRequest(r) => listener.on_link_request(r),
            Event::Progress(p) => listener.on_progress(p),
        }));
        if outcome.is_err() {
            tracing::warn!("an event listener callback failed");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::{Mode, ModeReason, Operation, ProgressStage};
    use std::time::Duration;

    /// Collects events for tests.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub events: Mutex<Vec<String>>,
    }

    impl EventListener for Recorder {
        fn on_message(&self, message: IncomingMessage) {
            self.push(format!("message {}", message.seq));
        }
        fn on_config_changed(&self, change: ConfigChange) {
            self.push(format!("config {:?}", change.documents));
        }
        fn on_mode_changed(&self, change: ModeChange) {
            self.push(format!("mode {:?} {:?}", change.mode, change.reason));
        }
        fn on_link_request(&self, request: LinkRequest) {
            self.push(format!("link {}", request.sas));
        }
        fn on_progress(&self, progress: Progress) {
            if progress.done == 13 {
                panic!("a failing callback");
            }
            self.push(format!("progress {}", progress.done));
        }
    }

    impl Recorder {
        fn push(&self, s: String) {
            self.events.lock().unwrap().push(s);
        }

        pub(crate) fn wait_for(&self, n: usize) -> Vec<String> {
            for _ in 0..500 {
                let events = self.events.lock().unwrap().clone();
                if events.len() >= n {
                    return events;
                }
                thread::sleep(Duration::from_millis(10));
            }
            self.events.lock().unwrap().clone()
        }
    }

    #[test]
    fn events_arrive_in_order_and_survive_a_failing_callback() {
        let rec = Arc::new(Recorder::default());
        let events = Events::start(Some(rec.clone()));
        let progress = |done| {
            Event::Progress(Progress {
                operation: Operation::Sync,
                stage: ProgressStage::Fetching,
                done,
                total: None,
                bytes: 0,
            })
        };
        events.send(progress(1));
        events.send(progress(13));
        events.send(Event::ModeChanged(ModeChange {
            mode: Mode::Slow,
            reason: ModeReason::TokenPruned,
            detail: String::new(),
        }));
        events.send(Event::LinkRequest(LinkRequest {
            sas: "123456".into(),
            relay_url: String::new(),
        }));
        assert_eq!(
            rec.wait_for(3),
            vec!["progress 1", "mode Slow TokenPruned", "link 123456"]
        );
    }

    #[test]
    fn no_listener_drops_events() {
        let events = Events::start(None);
        events.send(Event::LinkRequest(LinkRequest {
            sas: "1".into(),
            relay_url: String::new(),
        }));
        let rec = Arc::new(Recorder::default());
        events.set_listener(Some(rec.clone()));
        events.send(Event::LinkRequest(LinkRequest {
            sas: "2".into(),
            relay_url: String::new(),
        }));
        assert_eq!(rec.wait_for(1), vec!["link 2"]);
    }

    #[test]
    fn nothing_is_reported_after_close() {
        let rec = Arc::new(Recorder::default());
        let events = Events::start(Some(rec.clone()));
        events.close();
        events.send(Event::LinkRequest(LinkRequest {
            sas: "1".into(),
            relay_url: String::new(),
        }));
        events.set_listener(Some(rec.clone()));
        events.send(Event::LinkRequest(LinkRequest {
            sas: "2".into(),
            relay_url: String::new(),
        }));
        // Give a (wrongly) delivering dispatcher time to deliver; a pass cannot be a fluke
        // of a slow thread in the other direction, only a miss.
        thread::sleep(Duration::from_millis(100));
        assert!(rec.events.lock().unwrap().is_empty());
    }
}
