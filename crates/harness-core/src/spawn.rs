//! Running background work on the embedder's executor.
//!
//! Library crates never start a runtime of their own (ADR 002). Where a library
//! needs concurrent background work (supervising services, running probes), it
//! asks the embedder for a [`Spawner`]: smol, tokio or any other executor
//! implements it in one line.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future with no result.
pub type BoxTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Something that runs futures in the background, detached.
pub trait Spawner: Send + Sync + 'static {
    /// Runs `task` to completion in the background.
    fn spawn(&self, task: BoxTask);
}

impl<F> Spawner for F
where
    F: Fn(BoxTask) + Send + Sync + 'static,
{
    fn spawn(&self, task: BoxTask) {
        self(task)
    }
}

/// A shared spawner.
pub type SharedSpawner = Arc<dyn Spawner>;

/// A spawner that runs each task on a thread of its own with a tiny local
/// executor (`futures_lite::future::block_on`-style). Needs no runtime at all;
/// meant for tests and simple embedders, not for thousands of tasks.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadSpawner;

impl Spawner for ThreadSpawner {
    fn spawn(&self, task: BoxTask) {
        std::thread::spawn(move || block_on(task));
    }
}

/// Polls a future to completion on the current thread, parking between wake-ups.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};

    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn closures_are_spawners_and_thread_spawner_runs_tasks() {
        let (tx, rx) = mpsc::channel();
        let s: SharedSpawner = Arc::new(ThreadSpawner);
        s.spawn(Box::pin(async move {
            tx.send(7).unwrap();
        }));
        assert_eq!(rx.recv().unwrap(), 7);

        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        let inline = move |t: BoxTask| block_on(t);
        inline.spawn(Box::pin(async move {
            r.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
