//! The registry: service entries and address pools, persisted, with change events.

use std::any::Any;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use async_broadcast::{InactiveReceiver, Receiver, RecvError, Sender};
use harness_core::{Endpoint, ProjectName, ServiceName, ServiceState};
use serde::{Deserialize, Serialize};

use crate::alloc::{AllocError, IpPool};
use crate::entry::{Location, ServiceEntry, now_ms};
use crate::env::{EnvError, service_environment};
use crate::net::IpNet;
use crate::resolve::{ResolveError, resolve};
use crate::store::{LoadReport, LoadSource, PersistError, StateFile, StateLock};
use crate::topology::NetworkTopology;

/// How many events a subscriber may fall behind before it misses some.
pub const EVENT_BUFFER: usize = 1024;

/// Everything the registry knows; what it persists.
///
/// Reading one checks that every entry and pool is filed under its own name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SnapshotData")]
pub struct RegistrySnapshot {
    /// The services, by name.
    #[serde(default)]
    pub entries: BTreeMap<ServiceName, ServiceEntry>,
    /// The address pools, by name.
    #[serde(default)]
    pub pools: BTreeMap<String, IpPool>,
}

#[derive(Deserialize)]
struct SnapshotData {
    #[serde(default)]
    entries: BTreeMap<ServiceName, ServiceEntry>,
    #[serde(default)]
    pools: BTreeMap<String, IpPool>,
}

impl TryFrom<SnapshotData> for RegistrySnapshot {
    type Error = String;
    fn try_from(d: SnapshotData) -> Result<RegistrySnapshot, String> {
        if let Some((key, e)) = d.entries.iter().find(|(k, e)| **k != e.name) {
            return Err(format!("entry filed as `{key}` is named `{}`", e.name));
        }
        if let Some((key, p)) = d.pools.iter().find(|(k, p)| k.as_str() != p.name()) {
            return Err(format!("pool filed as `{key}` is named `{}`", p.name()));
        }
        Ok(RegistrySnapshot {
            entries: d.entries,
            pools: d.pools,
        })
    }
}

/// A change, as subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RegistryEvent {
    /// A service was added or changed.
    Upserted {
        /// The entry as it is now.
        entry: ServiceEntry,
        /// The entry before, if it existed.
        previous: Option<Box<ServiceEntry>>,
    },
    /// A service was removed, and its addresses released.
    Removed {
        /// The entry as it was.
        entry: ServiceEntry,
        /// The (pool, address) pairs it held.
        released: Vec<(String, IpAddr)>,
    },
    /// An address pool was defined (or redefined with another subnet).
    PoolDefined {
        /// The pool.
        pool: String,
        /// Its subnet.
        subnet: IpNet,
        /// Its gateway, never handed out.
        gateway: Option<IpAddr>,
    },
    /// An address was handed out.
    Allocated {
        /// The pool.
        pool: String,
        /// The owner.
        owner: ServiceName,
        /// The address.
        ip: IpAddr,
    },
    /// An address was given back.
    Released {
        /// The pool.
        pool: String,
        /// The former owner.
        owner: ServiceName,
        /// The address.
        ip: IpAddr,
    },
    /// This subscriber fell behind and missed `missed` events: re-read the
    /// registry ([`Registry::list`]) to catch up.
    Lagged {
        /// How many events were dropped for this subscriber.
        missed: u64,
    },
}

/// A registry failure, naming the service, pool or file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No service of that name is registered.
    #[error("no service `{0}` in the registry")]
    NotFound(String),
    /// No pool of that name is defined.
    #[error("no address pool `{0}` in the registry")]
    UnknownPool(String),
    /// A pool of that name exists with another subnet or gateway.
    #[error(
        "address pool `{pool}` already exists with subnet {existing}: it cannot be redefined as {requested} while it holds addresses"
    )]
    PoolConflict {
        /// The pool.
        pool: String,
        /// Its current subnet (and gateway).
        existing: String,
        /// What was asked for.
        requested: String,
    },
    /// Allocation failed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// Address resolution failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Reading or writing the state file failed; the registry is unchanged.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// The write carrying this change was cancelled half way (its future was
    /// dropped); the registry is unchanged.
    #[error("the registry write carrying this change was interrupted; the registry is unchanged")]
    Interrupted,
}

struct Inner {
    state: Mutex<RegistrySnapshot>,
    /// Serializes writers so the file always ends with the latest state.
    write: async_lock::Mutex<()>,
    /// Changes waiting for the next write (group commit).
    queue: Mutex<Vec<Job>>,
    file: Option<StateFile>,
    /// Held while the registry lives, so no other writer shares the file.
    _lock: Option<StateLock>,
    events: Sender<RegistryEvent>,
    /// Keeps the channel open while nobody subscribes.
    _keep_open: InactiveReceiver<RegistryEvent>,
}

/// What runs where. Cheap to clone (shared); safe to use from many tasks and threads.
///
/// Reads are synchronous and never wait for a writer's disk I/O. Writes are
/// `async`: they persist (on a blocking thread) before they take effect, so a
/// failed write leaves both memory and disk unchanged. Events go to every
/// [`Subscription`]; a slow subscriber never blocks a writer, it receives
/// [`RegistryEvent::Lagged`] instead of the events it missed.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("file", &self.inner.file.as_ref().map(StateFile::path))
            .field("services", &self.lock().entries.len())
            .finish()
    }
}

/// A stream of [`RegistryEvent`]s for one subscriber.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<RegistryEvent>,
}

impl Subscription {
    /// The next event; `None` once the registry is gone.
    pub async fn recv(&mut self) -> Option<RegistryEvent> {
        match self.rx.recv_direct().await {
            Ok(e) => Some(e),
            Err(RecvError::Overflowed(missed)) => Some(RegistryEvent::Lagged { missed }),
            Err(RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<RegistryEvent> {
        match self.rx.try_recv() {
            Ok(e) => Some(e),
            Err(async_broadcast::TryRecvError::Overflowed(missed)) => {
                Some(RegistryEvent::Lagged { missed })
            }
            Err(_) => None,
        }
    }
}

/// The same events as [`Subscription::recv`], as a stream.
impl futures_lite::Stream for Subscription {
    type Item = RegistryEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RegistryEvent>> {
        std::pin::Pin::new(&mut self.rx)
            .poll_recv(cx)
            .map(|item| match item {
                Some(Ok(e)) => Some(e),
                Some(Err(RecvError::Overflowed(missed))) => Some(RegistryEvent::Lagged { missed }),
                Some(Err(RecvError::Closed)) | None => None,
            })
    }
}

impl Registry {
    fn with(state: RegistrySnapshot, file: Option<StateFile>, lock: Option<StateLock>) -> Registry {
        let (mut tx, rx) = async_broadcast::broadcast(EVENT_BUFFER);
        tx.set_overflow(true);
        tx.set_await_active(false);
        Registry {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                write: async_lock::Mutex::new(()),
                queue: Mutex::new(Vec::new()),
                file,
                _lock: lock,
                events: tx,
                _keep_open: rx.deactivate(),
            }),
        }
    }

    /// A registry that lives in memory only.
    pub fn in_memory() -> Registry {
        Registry::with(RegistrySnapshot::default(), None, None)
    }

    /// Opens the registry persisted at `path` (created on first write), with
    /// a report of what loading found (a corrupt file recovered from its
    /// backup, for instance). Fails, changing nothing on disk, when neither
    /// the file nor its backup can be used, or when another process has it
    /// open ([`PersistError::Locked`]). To read the state of a registry another
    /// process owns, use [`StateFile::load`] instead.
    pub async fn open(path: impl Into<PathBuf>) -> Result<(Registry, LoadReport), RegistryError> {
        let file = StateFile::new(path);
        let loader = file.clone();
        let (lock, state, report) = blocking::unblock(move || {
            let lock = loader.lock_exclusive()?;
            let (state, report) = loader.load_and_repair::<RegistrySnapshot>()?;
            Ok::<_, PersistError>((lock, state, report))
        })
        .await?;
        let registry = Registry::with(state.unwrap_or_default(), Some(file), Some(lock));
        if report.source == LoadSource::Backup {
            // Put the recovered state back in place right away.
            let _guard = registry.inner.write.lock().await;
            let snapshot = registry.snapshot();
            registry.persist(&snapshot).await?;
        }
        Ok((registry, report))
    }

    /// The state file, if the registry is persisted.
    pub fn state_file(&self) -> Option<&StateFile> {
        self.inner.file.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, RegistrySnapshot> {
        lock_ignoring_poison(&self.inner.state)
    }

    /// A new subscriber to change events (only events after this call).
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.inner.events.new_receiver(),
        }
    }

    /// The entry of service `name`.
    pub fn get(&self, name: &str) -> Option<ServiceEntry> {
        self.lock().entries.get(name).cloned()
    }

    /// Every entry, ordered by name.
    pub fn list(&self) -> Vec<ServiceEntry> {
        self.lock().entries.values().cloned().collect()
    }

    /// A copy of everything the registry holds.
    pub fn snapshot(&self) -> RegistrySnapshot {
        self.lock().clone()
    }

    /// The pool `name`.
    pub fn pool(&self, name: &str) -> Option<IpPool> {
        self.lock().pools.get(name).cloned()
    }

    /// Adds or replaces the entry of a service. The first registration time
    /// is kept; the update time is set to now.
    pub async fn upsert(&self, mut entry: ServiceEntry) -> Result<(), RegistryError> {
        self.mutate(move |s| {
            let previous = s.entries.get(&entry.name).cloned();
            if let Some(p) = &previous {
                entry.registered_at_ms = p.registered_at_ms;
            }
            entry.updated_at_ms = now_ms();
            s.entries.insert(entry.name.clone(), entry.clone());
            Ok((
                (),
                vec![RegistryEvent::Upserted {
                    entry,
                    previous: previous.map(Box::new),
                }],
            ))
        })
        .await
    }

    /// Sets the state of a registered service; returns the updated entry.
    pub async fn set_state(
        &self,
        name: &str,
        state: ServiceState,
    ) -> Result<ServiceEntry, RegistryError> {
        self.update(name, move |e| e.state = state).await
    }

    /// Sets the location of a registered service (e.g. once its container got
    /// an address); returns the updated entry.
    pub async fn set_location(
        &self,
        name: &str,
        location: Location,
    ) -> Result<ServiceEntry, RegistryError> {
        self.update(name, move |e| e.location = location).await
    }

    /// Changes a registered service in place; returns the updated entry.
    /// `change` must not call back into the registry (it runs under its lock).
    pub async fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut ServiceEntry) + Send + 'static,
    ) -> Result<ServiceEntry, RegistryError> {
        let name = name.to_owned();
        self.mutate(move |s| {
            let entry = s
                .entries
                .get_mut(name.as_str())
                .ok_or_else(|| RegistryError::NotFound(name.clone()))?;
            let previous = entry.clone();
            change(entry);
            entry.name = previous.name.clone();
            entry.registered_at_ms = previous.registered_at_ms;
            entry.updated_at_ms = now_ms();
            let entry = entry.clone();
            Ok((
                entry.clone(),
                vec![RegistryEvent::Upserted {
                    entry,
                    previous: Some(Box::new(previous)),
                }],
            ))
        })
        .await
    }

    /// Removes a service and releases every address it holds. Returns the
    /// removed entry, or `None` if it was not registered.
    pub async fn remove(&self, name: &str) -> Result<Option<ServiceEntry>, RegistryError> {
        let name = name.to_owned();
        self.mutate(move |s| {
            let Some(entry) = s.entries.remove(name.as_str()) else {
                return Ok((None, Vec::new()));
            };
            let mut released = Vec::new();
            for (pool_name, pool) in s.pools.iter_mut() {
                if let Some(ip) = pool.release(&name) {
                    released.push((pool_name.clone(), ip));
                }
            }
            Ok((
                Some(entry.clone()),
                vec![RegistryEvent::Removed { entry, released }],
            ))
        })
        .await
    }

    /// Defines an address pool. Defining it again with the same subnet and
    /// gateway keeps the existing pool, assignments and reservations as they
    /// are (that is what makes addresses stable across restarts); a different
    /// subnet or gateway is an error while it holds addresses, and replaces
    /// the pool otherwise.
    pub async fn define_pool(&self, pool: IpPool) -> Result<(), RegistryError> {
        self.mutate(move |s| {
            if let Some(existing) = s.pools.get(pool.name()) {
                if existing.subnet() == pool.subnet() && existing.gateway() == pool.gateway() {
                    return Ok(((), Vec::new()));
                }
                if existing.assignments().next().is_some() {
                    return Err(RegistryError::PoolConflict {
                        pool: pool.name().to_owned(),
                        existing: describe_pool(existing),
                        requested: describe_pool(&pool),
                    });
                }
            }
            let event = RegistryEvent::PoolDefined {
                pool: pool.name().to_owned(),
                subnet: pool.subnet(),
                gateway: pool.gateway(),
            };
            s.pools.insert(pool.name().to_owned(), pool);
            Ok(((), vec![event]))
        })
        .await
    }

    /// Defines an address pool, replacing one of the same name with another
    /// subnet or gateway together with its assignments (each given back with
    /// a [`RegistryEvent::Released`]): for when the configuration, which is
    /// the truth, changed the subnet. The same subnet and gateway keep the
    /// pool as it is, like [`Registry::define_pool`].
    pub async fn replace_pool(&self, pool: IpPool) -> Result<(), RegistryError> {
        self.mutate(move |s| {
            let mut events = Vec::new();
            if let Some(existing) = s.pools.get(pool.name()) {
                if existing.subnet() == pool.subnet() && existing.gateway() == pool.gateway() {
                    return Ok(((), Vec::new()));
                }
                for (owner, ip) in existing.assignments() {
                    if let Ok(owner) = ServiceName::new(owner) {
                        events.push(RegistryEvent::Released {
                            pool: pool.name().to_owned(),
                            owner,
                            ip,
                        });
                    }
                }
            }
            events.push(RegistryEvent::PoolDefined {
                pool: pool.name().to_owned(),
                subnet: pool.subnet(),
                gateway: pool.gateway(),
            });
            s.pools.insert(pool.name().to_owned(), pool);
            Ok(((), events))
        })
        .await
    }

    /// The address of `owner` in `pool`: the one it holds, or a new one.
    pub async fn allocate(&self, pool: &str, owner: &ServiceName) -> Result<IpAddr, RegistryError> {
        let (pool, owner) = (pool.to_owned(), owner.clone());
        self.mutate(move |s| {
            let p = s
                .pools
                .get_mut(&pool)
                .ok_or_else(|| RegistryError::UnknownPool(pool.clone()))?;
            if let Some(ip) = p.get(owner.as_str()) {
                return Ok((ip, Vec::new()));
            }
            let ip = p.allocate(owner.as_str())?;
            Ok((ip, vec![RegistryEvent::Allocated { pool, owner, ip }]))
        })
        .await
    }

    /// Gives `owner` exactly `ip` in `pool` (an address fixed by configuration).
    pub async fn assign(
        &self,
        pool: &str,
        owner: &ServiceName,
        ip: IpAddr,
    ) -> Result<(), RegistryError> {
        let (pool, owner) = (pool.to_owned(), owner.clone());
        self.mutate(move |s| {
            let p = s
                .pools
                .get_mut(&pool)
                .ok_or_else(|| RegistryError::UnknownPool(pool.clone()))?;
            if p.get(owner.as_str()) == Some(ip) {
                return Ok(((), Vec::new()));
            }
            p.assign(owner.as_str(), ip)?;
            Ok(((), vec![RegistryEvent::Allocated { pool, owner, ip }]))
        })
        .await
    }

    /// Gives back the address `owner` holds in `pool`, if any.
    pub async fn release(
        &self,
        pool: &str,
        owner: &ServiceName,
    ) -> Result<Option<IpAddr>, RegistryError> {
        let (pool, owner) = (pool.to_owned(), owner.clone());
        self.mutate(move |s| {
            let p = s
                .pools
                .get_mut(&pool)
                .ok_or_else(|| RegistryError::UnknownPool(pool.clone()))?;
            match p.release(owner.as_str()) {
                Some(ip) => Ok((Some(ip), vec![RegistryEvent::Released { pool, owner, ip }])),
                None => Ok((None, Vec::new())),
            }
        })
        .await
    }

    /// Where a consumer at `consumer` reaches the registered service `provider`.
    pub fn resolve(
        &self,
        topology: &NetworkTopology,
        provider: &str,
        consumer: &Location,
    ) -> Result<Endpoint, RegistryError> {
        let entry = self
            .get(provider)
            .ok_or_else(|| RegistryError::NotFound(provider.to_owned()))?;
        Ok(resolve(topology, &entry, consumer)?)
    }

    /// The resolved environment of the registered service `service`: see
    /// [`service_environment`].
    pub fn environment(
        &self,
        topology: &NetworkTopology,
        project: &ProjectName,
        service: &str,
        declared: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, EnvError> {
        let snapshot = self.snapshot();
        let entry = snapshot
            .entries
            .get(service)
            .ok_or_else(|| EnvError::UnknownService {
                service: service.to_owned(),
                reference: None,
            })?;
        service_environment(project, &snapshot, topology, entry, declared)
    }

    /// Writes the current state to disk (a no-op in memory).
    pub async fn flush(&self) -> Result<(), RegistryError> {
        let _guard = self.inner.write.lock().await;
        let snapshot = self.snapshot();
        self.persist(&snapshot).await
    }

    async fn persist(&self, snapshot: &RegistrySnapshot) -> Result<(), RegistryError> {
        let Some(file) = &self.inner.file else {
            return Ok(());
        };
        let bytes = file.encode(snapshot)?;
        let file = file.clone();
        blocking::unblock(move || file.save_encoded(&bytes)).await?;
        Ok(())
    }

    /// Applies `change`, persists the result, then makes it current and sends
    /// its events. Nothing changes if either step fails.
    ///
    /// Contract of `change`: it returns an event for every change it makes
    /// (no event means nothing changed), and it fails before changing anything.
    ///
    /// Persisted writes are group-committed: a writer queues its change and
    /// waits for the write lock; whoever gets the lock applies every queued
    /// change to one copy and writes it once, so concurrent writers share one
    /// fsync instead of queueing for one each (ADR 005).
    async fn mutate<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut RegistrySnapshot) -> Result<(R, Vec<RegistryEvent>), RegistryError>
        + Send
        + 'static,
    ) -> Result<R, RegistryError> {
        if self.inner.file.is_none() {
            // In memory: nothing can fail after `change`, so change in place.
            let mut state = self.lock();
            let (result, events) = change(&mut state)?;
            self.announce(events);
            return Ok(result);
        }
        let slot: Slot = Arc::new(Mutex::new(None));
        let job = Job {
            change: Box::new(move |s: &mut RegistrySnapshot| {
                change(s).map(|(r, events)| (Box::new(r) as Box<dyn Any + Send>, events))
            }),
            slot: Arc::clone(&slot),
        };
        lock_ignoring_poison(&self.inner.queue).push(job);
        let guard = self.inner.write.lock().await;
        if lock_ignoring_poison(&slot).is_none() {
            // Nobody has taken our change yet: lead a batch with everything queued.
            self.commit_batch().await;
        }
        drop(guard);
        let outcome = lock_ignoring_poison(&slot)
            .take()
            .expect("a change is answered before the write lock it was queued under is released");
        outcome.map(|r| {
            *r.downcast::<R>()
                .expect("a slot holds the result type of its own change")
        })
    }

    /// Applies every queued change to one copy, persists it once, then answers
    /// each change. Called with the write lock held.
    async fn commit_batch(&self) {
        let jobs = std::mem::take(&mut *lock_ignoring_poison(&self.inner.queue));
        // If this future is dropped half way, the drained changes are answered
        // as interrupted (state unchanged) rather than left unanswered.
        let mut batch = Batch {
            answers: Vec::with_capacity(jobs.len()),
        };
        let mut next = self.snapshot();
        let mut events = Vec::new();
        for job in jobs {
            let answer = (job.change)(&mut next).map(|(r, ev)| {
                events.extend(ev);
                r
            });
            batch.answers.push((job.slot, Some(answer)));
        }
        if !events.is_empty() {
            if let Err(e) = self.persist(&next).await {
                let e = match e {
                    RegistryError::Persist(p) => p,
                    other => PersistError::Io {
                        action: "writing",
                        path: PathBuf::new(),
                        source: std::io::Error::other(other.to_string()),
                    },
                };
                for (_, answer) in &mut batch.answers {
                    if matches!(answer, Some(Ok(_))) {
                        *answer = Some(Err(RegistryError::Persist(duplicate(&e))));
                    }
                }
                batch.finish();
                return;
            }
            let mut state = self.lock();
            *state = next;
            // Sent while the state lock is held, so events are in the order of changes.
            self.announce(events);
        }
        batch.finish();
    }

    fn announce(&self, events: Vec<RegistryEvent>) {
        for event in events {
            // Overflow mode: never full, never blocks; fails only without subscribers.
            let _ = self.inner.events.try_broadcast(event);
        }
    }
}

type Answer = Result<Box<dyn Any + Send>, RegistryError>;
type Slot = Arc<Mutex<Option<Answer>>>;
type Change = Box<
    dyn FnOnce(
            &mut RegistrySnapshot,
        ) -> Result<(Box<dyn Any + Send>, Vec<RegistryEvent>), RegistryError>
        + Send,
>;

/// A queued change and where its answer goes.
struct Job {
    change: Change,
    slot: Slot,
}

/// The answers of a batch, delivered by [`Batch::finish`] or, if the batch is
/// dropped half way, as "interrupted".
struct Batch {
    answers: Vec<(Slot, Option<Answer>)>,
}

impl Batch {
    fn finish(mut self) {
        for (slot, answer) in self.answers.drain(..) {
            *lock_ignoring_poison(&slot) = answer;
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for (slot, _) in self.answers.drain(..) {
            *lock_ignoring_poison(&slot) = Some(Err(RegistryError::Interrupted));
        }
    }
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here replaces values whole: a poisoned lock still holds a good value.
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The same failure for every change of a failed batch.
fn duplicate(e: &PersistError) -> PersistError {
    match e {
        PersistError::Io {
            action,
            path,
            source,
        } => PersistError::Io {
            action,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => PersistError::Io {
            action: "writing",
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn describe_pool(p: &IpPool) -> String {
    match p.gateway() {
        Some(g) => format!("{} (gateway {g})", p.subnet()),
        None => p.subnet().to_string(),
    }
}
