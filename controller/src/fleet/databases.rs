//! A fleet's journal work spans one database per group: done one after
//! another, a hundred logins and writes would hold the fleet up for many
//! seconds before its first group starts. Done a bounded number at a time,
//! in order, it costs a few round trips without storming one server with
//! logins.

use futures_util::StreamExt;
use std::future::Future;

/// Databases worked on at once.
const DATABASES_AT_ONCE: usize = 16;

/// `work` for every item, [`DATABASES_AT_ONCE`] at a time; the results in
/// the items' order.
pub(super) async fn each<I, T, F, Fut>(items: I, work: F) -> Vec<T>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = T>,
{
    futures_util::stream::iter(items)
        .map(work)
        .buffered(DATABASES_AT_ONCE)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn results_keep_the_order_and_at_most_the_bound_run_at_once() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let out = each(0..50u64, |i| {
            let (running, most) = (&running, &most);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Later items finish first: order must come from the helper.
                tokio::time::sleep(Duration::from_millis(50 - i)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                i * 2
            }
        })
        .await;
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!(most > 1 && most <= DATABASES_AT_ONCE, "{most} at once");
    }
}
