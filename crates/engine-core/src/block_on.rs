//! Drives one future to completion on the current thread, parking it while the future
//! waits. Agent hooks run through here, so a handler may await IO from whatever async
//! runtime the calling thread has entered.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
}

/// Polls `future` until it is ready, parking the thread between wake-ups.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    match block_on_until(future, None) {
        Some(output) => output,
        None => unreachable!("without a deadline the future runs to the end"),
    }
}

/// Polls `future` until it is ready or `deadline` has passed; then it is dropped
/// (cancelled at the await it is waiting in) and `None` is returned. A future that
/// blocks its thread without awaiting cannot be cancelled: it is seen to be late only
/// when it returns, and then its output stands.
pub(crate) fn block_on_until<F: Future>(future: F, deadline: Option<Instant>) -> Option<F::Output> {
    let mut future = pin!(future);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Some(output);
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    thread::park_timeout(left);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A future that is pending until another thread sets its flag and wakes it.
    struct Flag(Arc<AtomicBool>, bool);

    impl Future for Flag {
        type Output = u32;
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.0.load(Ordering::SeqCst) {
                return Poll::Ready(7);
            }
            if !self.1 {
                self.1 = true;
                let (flag, waker) = (self.0.clone(), cx.waker().clone());
                thread::spawn(move || {
                    flag.store(true, Ordering::SeqCst);
                    waker.wake();
                });
            }
            Poll::Pending
        }
    }

    #[test]
    fn a_future_past_its_deadline_is_dropped() {
        let deadline = Instant::now() + std::time::Duration::from_millis(10);
        assert_eq!(
            block_on_until(std::future::pending::<()>(), Some(deadline)),
            None
        );
        let ready = block_on_until(std::future::ready(3), Some(Instant::now()));
        assert_eq!(ready, Some(3), "a ready future is never late");
    }

    #[test]
    fn waits_for_a_wake_from_another_thread() {
        assert_eq!(block_on(Flag(Arc::new(AtomicBool::new(false)), false)), 7);
    }
}
