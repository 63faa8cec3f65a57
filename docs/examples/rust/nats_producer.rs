//! Submit a job to tcoder over NATS from Rust (async-nats), then follow it to the end.
//!
//! ```text
//! cargo run -p tcoder-ingest --example nats-producer -- \
//!     nats://127.0.0.1:4222 acme uploads/acme/clip.mp4 '{"preset": "hls"}' [user password]
//! ```
//!
//! The object must already be in the bucket under `uploads/<tenant>/` (put it with any S3
//! client). The submission is a request on `tcoder.submit.<tenant>` with a `Nats-Msg-Id` (its
//! idempotency key: retrying with the same id returns the same job). The reply is the job id,
//! or a typed error; then the job's events (`tcoder.events.<tenant>.<job_id>.<kind>`) are printed until
//! a terminal one. Prints one JSON line per message. See docs/PRODUCERS.md and
//! docs/asyncapi.yaml.

use std::time::Duration;

use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, tenant, key, job, rest @ ..] = args.as_slice() else {
        eprintln!("usage: nats-producer NATS_URL TENANT KEY JOB_JSON [USER PASSWORD]");
        std::process::exit(2);
    };
    let mut options = async_nats::ConnectOptions::new()
        // Replies come to this tenant's inbox prefix (its producer user may read no other).
        .custom_inbox_prefix(format!("_INBOX_{tenant}"))
        .request_timeout(Some(Duration::from_secs(10)));
    if let [user, password] = rest {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let client = options.connect(url.as_str()).await?;

    // Subscribed before submitting, so no event of the new job is missed (a core subscription
    // sees what is published from now on; the EVENTS stream keeps the last days for a
    // JetStream consumer).
    let mut events = client.subscribe(format!("tcoder.events.{tenant}.>")).await?;

    let mut body: serde_json::Value = serde_json::from_str(job)?;
    body["source"] = serde_json::json!({ "key": key });
    let mut headers = async_nats::HeaderMap::new();
    let submission_id = format!("{tenant}-{key}");
    headers.insert(async_nats::header::NATS_MESSAGE_ID, submission_id.as_str());
    let reply = client
        .request_with_headers(format!("tcoder.submit.{tenant}"), headers, body.to_string().into())
        .await?;
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    println!("{reply}");
    let Some(job_id) = reply["job_id"].as_str() else {
        // A typed error: {"error": {"code": "source.not_found", "message": "…"}}.
        std::process::exit(1);
    };

    while let Some(message) = events.next().await {
        let event: serde_json::Value = serde_json::from_slice(&message.payload)?;
        if event["job_id"] != job_id {
            continue;
        }
        println!("{event}");
        if matches!(event["type"].as_str(), Some("completed" | "failed" | "canceled")) {
            break;
        }
    }
    Ok(())
}
