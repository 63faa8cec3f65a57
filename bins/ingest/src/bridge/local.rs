//! Feeds the embedded store's creation notifications into the bridge. A transient failure is
//! retried a few times; after that the sweep finds the upload.

use std::time::Duration;

use tcoder::events::UploadSource;
use tcoder::s3::ObjectCreated;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Bridge;

const ATTEMPTS: u32 = 5;

/// Runs until `stop` or until the store's sender is gone.
pub(crate) async fn run(
    bridge: Bridge,
    mut created: mpsc::Receiver<ObjectCreated>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let event = tokio::select! {
            event = created.recv() => match event {
                Some(event) => event,
                None => return Ok(()),
            },
            () = stop.cancelled() => return Ok(()),
        };
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            match bridge.handle(&event, UploadSource::Local).await {
                Ok(_) => break,
                Err(_) if attempt < ATTEMPTS => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return Ok(()),
                    }
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(key = %event.key, error = %e, "giving up on this notification; the sweep will find the upload")
                }
            }
        }
    }
}
