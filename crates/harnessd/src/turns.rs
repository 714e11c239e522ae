//! One request at a time per project (ADR 023).
//!
//! Every request that changes a project (`up`, `down`, `start`, `stop`,
//! `restart`, and the reload of a changed configuration that an `up` or a
//! `start` brings) gets an arrival number when the daemon starts handling it
//! and acts on its project only when it is its **turn**: the requests of one
//! project take turns in the order they arrived, one at a time. A request
//! whose files must be loaded to know its project holds its place while it
//! loads: a request naming a project waits for the loads that arrived before
//! it and may be of that project (it named none, or the same one) before it
//! takes its place, so it never overtakes them.
//!
//! An `up --wait` gives its turn back once its services are started and waits
//! for their readiness as a [`Watch`]: a later request that stops services it
//! waits for (a `down`, `stop`, `restart`, or a reload) ends that wait with
//! its reason when its own turn comes, instead of the up waiting for
//! services that will not come.
//!
//! Nothing here waits forever by itself: a turn is given back when its
//! request ends (done, failed, or dropped because its client went away), a
//! load ends with its request, and every waiter leaves its line when dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use event_listener::Event;
use harness_core::{ProjectName, ServiceName};

/// The lines of requests of every project.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    state: Mutex<State>,
    /// Notified whenever a turn is given back, a load ends or a request leaves a line.
    changed: Event,
}

#[derive(Debug, Default)]
struct State {
    /// The number the next request or watch gets.
    next: u64,
    /// Loads in flight, by arrival number, with the project name the request gave.
    loads: BTreeMap<u64, Option<ProjectName>>,
    lines: BTreeMap<ProjectName, Line>,
}

impl State {
    fn number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// The requests of one project.
#[derive(Debug, Default)]
struct Line {
    /// The request whose turn it is.
    holder: Option<u64>,
    /// The requests waiting for their turn, by arrival number.
    waiting: BTreeSet<u64>,
    /// The `up --wait`s waiting for readiness, and what they wait for.
    watches: BTreeMap<u64, Watched>,
}

impl Line {
    fn is_empty(&self) -> bool {
        self.holder.is_none() && self.waiting.is_empty() && self.watches.is_empty()
    }
}

#[derive(Debug)]
struct Watched {
    services: Vec<ServiceName>,
    /// Carries why the wait is over; holds one message at most.
    tx: async_channel::Sender<String>,
}

impl Turns {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement: a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request arrives that names its project (or names none: the only one
    /// loaded). It joins a line with [`Arrival::join`] once
    /// [`Arrival::after_loads`] is done.
    pub(crate) fn arrive(&self) -> Arrival<'_> {
        let id = self.lock().number();
        Arrival {
            turns: self,
            id,
            loading: false,
        }
    }

    /// A request arrives that loads its project's files first; `name` is the
    /// name it gives the project, if any. Until it joins its project's line
    /// (or is dropped), requests arriving after it that may be about the same
    /// project wait for it.
    pub(crate) fn arrive_loading(&self, name: Option<ProjectName>) -> Arrival<'_> {
        let mut state = self.lock();
        let id = state.number();
        state.loads.insert(id, name);
        Arrival {
            turns: self,
            id,
            loading: true,
        }
    }

    /// Removes `id` from the line of `name` (as holder, waiter or watch),
    /// forgetting the line once it is empty.
    fn leave(&self, name: &ProjectName, id: u64) {
        let mut state = self.lock();
        if let Some(line) = state.lines.get_mut(name) {
            if line.holder == Some(id) {
                line.holder = None;
            }
            line.waiting.remove(&id);
            line.watches.remove(&id);
            if line.is_empty() {
                state.lines.remove(name);
            }
        }
        drop(state);
        self.changed.notify(usize::MAX);
    }
}

/// A request that has arrived and has not joined its project's line yet.
#[derive(Debug)]
pub(crate) struct Arrival<'a> {
    turns: &'a Turns,
    id: u64,
    loading: bool,
}

impl<'a> Arrival<'a> {
    /// Waits until the loads that arrived before this request and may be of
    /// project `name` (of any project with `None`) have joined their lines or
    /// ended. Loads are bounded (files of bounded size), so this ends.
    pub(crate) async fn after_loads(&self, name: Option<&ProjectName>) {
        let earlier = |state: &State| {
            state
                .loads
                .range(..self.id)
                .any(|(_, given)| match (given, name) {
                    (Some(given), Some(name)) => given == name,
                    _ => true,
                })
        };
        loop {
            let listener = self.turns.changed.listen();
            if !earlier(&self.turns.lock()) {
                return;
            }
            listener.await;
        }
    }

    /// The projects in whose lines a request that arrived before this one
    /// waits or has its turn.
    pub(crate) fn earlier_projects(&self) -> Vec<ProjectName> {
        let state = self.turns.lock();
        state
            .lines
            .iter()
            .filter(|(_, line)| {
                line.holder.is_some_and(|h| h < self.id)
                    || line.waiting.first().is_some_and(|w| *w < self.id)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Takes this request's place in the line of project `name`, in the order
    /// of arrival. [`Ticket::turn`] waits for its turn.
    pub(crate) fn join(self, name: ProjectName) -> Ticket<'a> {
        let mut state = self.turns.lock();
        state.loads.remove(&self.id);
        state
            .lines
            .entry(name.clone())
            .or_default()
            .waiting
            .insert(self.id);
        drop(state);
        let ticket = Ticket {
            turns: self.turns,
            id: self.id,
            name,
        };
        // The load (if any) is over: requests waiting for it go on. Dropping
        // `self` does that.
        drop(self);
        ticket
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if self.loading {
            self.turns.lock().loads.remove(&self.id);
            self.turns.changed.notify(usize::MAX);
        }
    }
}

/// A request's place in its project's line. Dropping it gives the turn back
/// (or leaves the line).
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    turns: &'a Turns,
    id: u64,
    name: ProjectName,
}

impl<'a> Ticket<'a> {
    /// The project.
    pub(crate) fn name(&self) -> &ProjectName {
        &self.name
    }

    /// Waits until it is this request's turn: every request of the project
    /// that arrived before it has ended.
    pub(crate) async fn turn(&self) {
        loop {
            let listener = self.turns.changed.listen();
            {
                let mut state = self.turns.lock();
                let line = state.lines.entry(self.name.clone()).or_default();
                if line.holder == Some(self.id) {
                    return;
                }
                if line.holder.is_none() && line.waiting.first() == Some(&self.id) {
                    line.waiting.remove(&self.id);
                    line.holder = Some(self.id);
                    return;
                }
            }
            listener.await;
        }
    }

    /// Ends the waits of the project's `up --wait`s that wait for any of
    /// `services` (for anything with `None`), telling them `why`.
    pub(crate) fn end_waits(&self, services: Option<&[ServiceName]>, why: &str) {
        let state = self.turns.lock();
        let Some(line) = state.lines.get(&self.name) else {
            return;
        };
        for watched in line.watches.values() {
            let hit = services.is_none_or(|s| watched.services.iter().any(|w| s.contains(w)));
            if hit {
                // Holds one message: the first reason stands.
                let _ = watched.tx.try_send(why.to_owned());
            }
        }
    }

    /// A watch on `services` for an `up --wait` about to give its turn back:
    /// requests taking their turn after this one can end its wait.
    pub(crate) fn watch(&self, services: &[ServiceName]) -> Watch<'a> {
        let (tx, rx) = async_channel::bounded(1);
        let mut state = self.turns.lock();
        let id = state.number();
        state
            .lines
            .entry(self.name.clone())
            .or_default()
            .watches
            .insert(
                id,
                Watched {
                    services: services.to_vec(),
                    tx,
                },
            );
        Watch {
            turns: self.turns,
            id,
            name: self.name.clone(),
            rx,
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.turns.leave(&self.name, self.id);
    }
}

/// An `up --wait` waiting for readiness without holding its project's turn.
#[derive(Debug)]
pub(crate) struct Watch<'a> {
    turns: &'a Turns,
    id: u64,
    name: ProjectName,
    rx: async_channel::Receiver<String>,
}

impl Watch<'_> {
    /// Resolves with the reason once another request ended the wait.
    pub(crate) async fn ended(&self) -> String {
        match self.rx.recv().await {
            Ok(why) => why,
            // The sender lives in the line as long as this watch: not reached.
            Err(_) => futures_lite::future::pending().await,
        }
    }

    /// The reason, if another request has ended the wait.
    pub(crate) fn has_ended(&self) -> Option<String> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.turns.leave(&self.name, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    fn project(n: &str) -> ProjectName {
        ProjectName::new(n).unwrap()
    }

    fn service(n: &str) -> ServiceName {
        ServiceName::new(n).unwrap()
    }

    /// True when `fut` is still pending after being polled once.
    fn pending<F: Future>(fut: F) -> bool {
        future::block_on(future::poll_once(std::pin::pin!(fut))).is_none()
    }

    #[test]
    fn turns_follow_arrival_not_joining() {
        let turns = Turns::default();
        let first = turns.arrive();
        let second = turns.arrive();
        let second = second.join(project("p"));
        let first = first.join(project("p"));
        assert!(pending(second.turn()));
        future::block_on(first.turn());
        assert!(pending(second.turn()));
        drop(first);
        future::block_on(second.turn());
    }

    #[test]
    fn projects_do_not_wait_for_each_other() {
        let turns = Turns::default();
        let a = turns.arrive().join(project("a"));
        let b = turns.arrive().join(project("b"));
        future::block_on(a.turn());
        future::block_on(b.turn());
    }

    #[test]
    fn a_dropped_waiter_leaves_the_line() {
        let turns = Turns::default();
        let first = turns.arrive().join(project("p"));
        let gone = turns.arrive().join(project("p"));
        let third = turns.arrive().join(project("p"));
        future::block_on(first.turn());
        drop(gone);
        drop(first);
        future::block_on(third.turn());
        drop(third);
        assert!(turns.lock().lines.is_empty());
    }

    #[test]
    fn a_named_request_waits_for_earlier_loads_of_maybe_its_project() {
        let turns = Turns::default();
        let unnamed = turns.arrive_loading(None);
        let other = turns.arrive_loading(Some(project("other")));
        let down = turns.arrive();
        let later = turns.arrive_loading(None);
        assert!(pending(down.after_loads(Some(&project("p")))));
        let up = unnamed.join(project("p"));
        // Neither a load of another project nor a later one is waited for.
        future::block_on(down.after_loads(Some(&project("p"))));
        // Unnamed, it waits for every earlier load.
        assert!(pending(down.after_loads(None)));
        drop(other);
        future::block_on(down.after_loads(None));
        let down = down.join(project("p"));
        future::block_on(up.turn());
        assert!(pending(down.turn()));
        drop(up);
        future::block_on(down.turn());
        drop(later);
    }

    #[test]
    fn later_requests_end_the_waits_they_affect() {
        let turns = Turns::default();
        let up = turns.arrive().join(project("p"));
        future::block_on(up.turn());
        let waits_for_web = up.watch(&[service("web")]);
        let waits_for_db = up.watch(&[service("db")]);
        drop(up);
        let stop = turns.arrive().join(project("p"));
        future::block_on(stop.turn());
        stop.end_waits(Some(&[service("db")]), "db stopped");
        assert_eq!(waits_for_web.has_ended(), None);
        assert_eq!(future::block_on(waits_for_db.ended()), "db stopped");
        stop.end_waits(None, "taken down");
        stop.end_waits(None, "again");
        assert_eq!(waits_for_web.has_ended().as_deref(), Some("taken down"));
        drop((stop, waits_for_db, waits_for_web));
        assert!(turns.lock().lines.is_empty());
    }
}
