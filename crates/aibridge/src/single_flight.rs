//! One call in flight per key: concurrent callers asking the same question share the answer of
//! the first (a 401 seen by many requests at once costs one confirmation).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

pub struct SingleFlight<K, V: Clone> {
    inflight: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
}

impl<K, V: Clone> std::fmt::Debug for SingleFlight<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight").finish_non_exhaustive()
    }
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone + Send + Sync + 'static> SingleFlight<K, V> {
    /// The answer of the call in flight for `key`, or of `call` started now.
    pub async fn run(&self, key: K, call: impl FnOnce() -> BoxFuture<'static, V>) -> V {
        let shared = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            inflight
                .entry(key.clone())
                .or_insert_with(|| call().shared())
                .clone()
        };
        let answer = shared.clone().await;
        // Whoever sees the call finish takes it out (the caller that started it may have been
        // dropped meanwhile), so a finished answer is never handed to a later question.
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if inflight.get(&key).is_some_and(|f| f.ptr_eq(&shared)) {
            inflight.remove(&key);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_call() {
        let flights = Arc::new(SingleFlight::<u8, u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flights, calls) = (flights.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run(1, || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            7
                        }
                        .boxed()
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Once answered, the next question starts a new call.
        let again = flights.run(1, || async { 8 }.boxed()).await;
        assert_eq!(again, 8);
    }

    /// The caller that started a call goes away (its client left): a caller waiting on the same
    /// call still gets its answer, and the question after that starts afresh instead of being
    /// answered from the finished call forever.
    #[tokio::test]
    async fn a_dropped_starter_leaves_no_stale_answer() {
        let flights = Arc::new(SingleFlight::<u8, u32>::default());
        let starter = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run(1, || {
                        async {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            7
                        }
                        .boxed()
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(1, || async { 99 }.boxed()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        starter.abort();
        assert_eq!(
            waiter.await.unwrap(),
            7,
            "the waiter shares the call in flight"
        );
        assert_eq!(flights.run(1, || async { 8 }.boxed()).await, 8);
    }
}
