//! What happens to a project's services, for clients: state changes, health verdicts,
//! lifecycle reports and configuration reloads as [`EventItem`]s.
//!
//! [`item_of`] turns one manager event into what a client is sent. [`ProjectEvents`] is a
//! project's stream of events (`harness events`): it outlives the managers a project has
//! over its reloads, fans out to any number of followers, and has a channel and follows its
//! manager only while someone listens, so a project nobody watches pays nothing for it.

use std::sync::{Arc, Mutex};

use futures_lite::StreamExt;
use harness_core::{ProjectName, ServiceName, ServiceState, SharedSpawner};
use harness_protocol::{EventItem, EventKind, LogItem, StreamItem};
use service_orchestration::{ManagerEvent, ServiceManager};

use crate::logs;

/// Events kept for a follower that is slow to read; older ones are dropped for it.
const CAPACITY: usize = 1024;

/// The item a client is sent for manager event `ev` of project `name`, if any. With
/// `output`, lines of output are log items (what `up` shows while services start);
/// without, harness's own lines about a service (exits, restarts, failures to start) are
/// [`EventKind::Report`] events and other output is left out.
pub fn item_of(
    name: &ProjectName,
    m: &ServiceManager,
    ev: ManagerEvent,
    output: bool,
) -> Option<StreamItem> {
    let (service, state, health, kind, message) = match ev {
        ManagerEvent::State { service, state } => {
            (service, Some(state), None, EventKind::State, None)
        }
        ManagerEvent::Health {
            service,
            health,
            detail,
        } => (service, None, Some(health), EventKind::Health, Some(detail)),
        ManagerEvent::Output {
            service,
            line,
            timestamp,
        } if output => {
            return Some(StreamItem::Log(LogItem {
                project: name.clone(),
                service,
                stream: line.stream,
                ts_ms: timestamp
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                line: line.text().into_owned(),
            }));
        }
        ManagerEvent::Output { service, line, .. }
            if line.stream == harness_core::OutputStream::Harness =>
        {
            let text = line.text().into_owned();
            (service, None, None, EventKind::Report, Some(text))
        }
        _ => return None,
    };
    let st = m.status().into_iter().find(|s| s.name == service);
    let state = state.or_else(|| st.as_ref().map(|s| s.state.clone()))?;
    Some(StreamItem::Event(EventItem {
        project: name.clone(),
        service,
        ts_ms: logs::now_ms(),
        state,
        health: health
            .or_else(|| st.as_ref().map(|s| s.health))
            .unwrap_or_default(),
        pid: st.and_then(|s| s.pid),
        kind,
        message,
    }))
}

/// The event stream of one project, across its managers. Its channel exists only while
/// someone follows (a channel holds its capacity from the start).
pub struct ProjectEvents {
    name: ProjectName,
    spawner: SharedSpawner,
    following: Arc<Mutex<Following>>,
}

impl std::fmt::Debug for ProjectEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectEvents")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The project's current manager and, while someone listens, the channel to the followers
/// and the task that feeds it.
#[derive(Default)]
struct Following {
    manager: Option<ServiceManager>,
    tx: Option<async_broadcast::Sender<EventItem>>,
    /// Dropped to end the task.
    retire: Option<async_channel::Sender<()>>,
}

impl ProjectEvents {
    /// The stream of project `name`, following `manager`; background work runs on `spawner`.
    pub fn new(name: ProjectName, manager: ServiceManager, spawner: SharedSpawner) -> Self {
        ProjectEvents {
            name,
            spawner,
            following: Arc::new(Mutex::new(Following {
                manager: Some(manager),
                ..Following::default()
            })),
        }
    }

    /// A new follower of every event from now on.
    pub fn subscribe(&self) -> async_broadcast::Receiver<EventItem> {
        let mut f = self.following.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = f.tx.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.new_receiver();
        }
        let (mut tx, rx) = async_broadcast::broadcast(CAPACITY);
        tx.set_overflow(true);
        f.tx = Some(tx);
        self.start(&mut f);
        rx
    }

    /// The project has a new manager (its configuration was loaded again): follow it.
    pub fn set_manager(&self, manager: ServiceManager) {
        let mut f = self.following.lock().unwrap_or_else(|p| p.into_inner());
        f.manager = Some(manager);
        if f.retire.is_some() {
            self.start(&mut f);
        }
    }

    /// Sends `item` to every follower.
    pub fn publish(&self, item: EventItem) {
        let f = self.following.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = &f.tx {
            // With overflow on, a full buffer drops the oldest event for a slow follower.
            let _ = tx.try_broadcast(item);
        }
    }

    /// A reload event of `service`: it changed, was added or was removed (`what`).
    pub fn reload(&self, service: ServiceName, state: ServiceState, what: &str) {
        self.publish(EventItem {
            project: self.name.clone(),
            service,
            ts_ms: logs::now_ms(),
            state,
            health: harness_core::Health::Unknown,
            pid: None,
            kind: EventKind::Reload,
            message: Some(what.to_owned()),
        });
    }

    /// Starts following the current manager into the channel, ending the task that did
    /// so until now (the caller holds the lock).
    fn start(&self, f: &mut Following) {
        let (Some(manager), Some(tx)) = (f.manager.clone(), f.tx.clone()) else {
            return;
        };
        let (retire, retired) = async_channel::bounded::<()>(1);
        f.retire = Some(retire);
        // Subscribed now, so nothing that happens from here on is missed.
        let sub = manager.subscribe();
        self.spawner.spawn(Box::pin(run(
            self.name.clone(),
            manager,
            sub,
            tx,
            retired,
            Arc::downgrade(&self.following),
        )));
    }
}

/// Forwards `manager`'s events until retired, or until nobody listens any more.
async fn run(
    name: ProjectName,
    manager: ServiceManager,
    mut sub: service_orchestration::manager::Subscription,
    tx: async_broadcast::Sender<EventItem>,
    retired: async_channel::Receiver<()>,
    following: std::sync::Weak<Mutex<Following>>,
) {
    loop {
        let next = futures_lite::future::or(async { sub.next().await }, async {
            let _ = retired.recv().await;
            None
        })
        .await;
        let Some(ev) = next else { return };
        if let Some(StreamItem::Event(item)) = item_of(&name, &manager, ev, false) {
            let _ = tx.try_broadcast(item);
        }
        if tx.receiver_count() == 0 {
            let Some(following) = following.upgrade() else {
                return;
            };
            let mut f = following.lock().unwrap_or_else(|p| p.into_inner());
            if retired.is_closed() {
                // Replaced by the task of a new manager.
                return;
            }
            // Checked again under the lock, which a new follower takes to subscribe.
            if tx.receiver_count() == 0 {
                f.retire = None;
                f.tx = None;
                return;
            }
        }
    }
}
