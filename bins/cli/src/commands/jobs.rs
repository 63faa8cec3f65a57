//! `tcoder status <id>`, `tcoder jobs`, `tcoder cancel <id>`, `tcoder delete <id>…`.

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

/// Deletes each job (its outputs, uploaded source and record); every id is tried, the first
/// failure is returned after the rest.
pub(crate) async fn delete(client: &Client, ids: &[String]) -> anyhow::Result<()> {
    let mut first_error = None;
    for id in ids {
        match client.delete(id).await {
            Ok(()) => println!("{id} deleted"),
            Err(e) => {
                eprintln!("{id}: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}
