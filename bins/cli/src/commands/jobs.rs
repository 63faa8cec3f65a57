//! `tcoder status <id>`, `tcoder jobs`, `tcoder cancel <id>`.

use crate::client::ApiClient;

/// The job as JSON (with its latest `progress` while it runs).
pub(crate) async fn status(client: &ApiClient, id: &str) -> anyhow::Result<()> {
    let job = client.job(id).await?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

pub(crate) async fn list(
    client: &ApiClient,
    status: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> anyhow::Result<()> {
    let page = client.jobs(status, limit, cursor).await?;
    let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
    println!("{:<40} {:<16} {:<14} {:<24} CREATED", "ID", "STATUS", "PRESET", "ORIGIN");
    for job in &jobs {
        println!(
            "{:<40} {:<16} {:<14} {:<24} {}",
            job["id"].as_str().unwrap_or("?"),
            job["status"].as_str().unwrap_or("?"),
            job["preset"].as_str().unwrap_or("?"),
            origin(&job["origin"]),
            job["created_at"].as_str().unwrap_or("?")
        );
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("(more: tcoder jobs --cursor {cursor})");
    }
    Ok(())
}

/// `api`, `nats` or `watch:<rule>`.
fn origin(origin: &serde_json::Value) -> String {
    match (origin["kind"].as_str(), origin["rule"].as_str()) {
        (Some("watch"), Some(rule)) => format!("watch:{rule}"),
        (Some(kind), _) => kind.to_owned(),
        (None, _) => "?".to_owned(),
    }
}

pub(crate) async fn cancel(client: &ApiClient, id: &str) -> anyhow::Result<()> {
    let job = client.cancel(id).await?;
    println!("{} {}", job["id"].as_str().unwrap_or(id), job["status"].as_str().unwrap_or("?"));
    Ok(())
}
