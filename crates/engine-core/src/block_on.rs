//! Drives one future to completion on the current thread, parking it while the future
//! waits. Agent hooks run through here, so a handler may await IO from whatever async
//! runtime the calling thread has entered.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
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

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
}

/// Polls `future` until it is ready, parking the thread between wake-ups.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            thread::park();
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
    fn waits_for_a_wake_from_another_thread() {
        assert_eq!(block_on(Flag(Arc::new(AtomicBool::new(false)), false)), 7);
    }
}
