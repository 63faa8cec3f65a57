//! Bounded waits on a condition: the only way tests wait for something asynchronous.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Ok`, for at most `timeout`; panics with the last error
/// otherwise. Polls quickly at first, then every 100 ms.
pub fn eventually<T, E: Debug>(timeout: Duration, mut probe: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        match probe() {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => {
                panic!("condition not met within {timeout:?}; last error: {e:?}")
            }
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// The async form of [`eventually`].
pub async fn eventually_async<T, E, F, Fut>(timeout: Duration, mut probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("condition not met within {timeout:?}; last error: {e:?}")
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_probe_succeeds() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(1), || {
            calls += 1;
            if calls < 3 { Err("not yet") } else { Ok(calls) }
        });
        assert_eq!(value, 3);
    }

    #[test]
    #[should_panic(expected = "condition not met")]
    fn panics_after_the_timeout() {
        eventually(Duration::from_millis(30), || Err::<(), _>("never"));
    }
}
