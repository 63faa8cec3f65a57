//! `tcoder status <id>`, `tcoder jobs`, `tcoder cancel <id>`.

use tcoder::api::{Client, JobsQuery};
use tcoder::jobs::JobOrigin;

/// The job as JSON (with its latest `progress` while it runs).
pub(crate) async fn status(client: &Client, id: &str) -> anyhow::Result<()> {
    let job = client.job(id).await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

pub(crate) async fn list(client: &Client, query: &JobsQuery) -> anyhow::Result<()> {
    let page = client.jobs(query).await?;
    println!("{:<40} {:<16} {:<14} {:<24} CREATED", "ID", "STATUS", "PRESET", "ORIGIN");
    for job in &page.jobs {
        println!(
            "{:<40} {:<16} {:<14} {:<24} {}",
            job.id.as_str(),
            job.status.as_str(),
            job.spec.preset.as_str(),
            origin(&job.origin),
            job.created_at
        );
    }
    if let Some(cursor) = &page.next_cursor {
        println!("(more: tcoder jobs --cursor {cursor})");
    }
    Ok(())
}

/// `api`, `nats` or `watch:<rule>`.
fn origin(origin: &JobOrigin) -> String {
    match origin {
        JobOrigin::Api => "api".to_owned(),
        JobOrigin::Nats { .. } => "nats".to_owned(),
        JobOrigin::Watch { rule } => format!("watch:{rule}"),
    }
}

pub(crate) async fn cancel(client: &Client, id: &str) -> anyhow::Result<()> {
    let job = client.cancel(id).await?;
    println!("{} {}", job.id, job.status);
    Ok(())
}
