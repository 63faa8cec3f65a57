//! `tcoder download <job> [dir]`: every file of a completed job, as listed in its manifest,
//! into `dir` (default: the job id), in the layout it has in the bucket; sizes are checked.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tcoder::api::Client;
use tcoder::jobs::{JobResult, JobStatus};
use tokio::io::AsyncWriteExt;

pub(crate) async fn run(client: &Client, id: &str, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let job = client.job(id).await?;
    let (JobStatus::Completed, Some(summary)) = (job.status, job.result) else {
        bail!("job {id} is {}: nothing to download", job.status);
    };
    let http = reqwest::Client::new();
    // Files are fetched next to the manifest's own URL: that works for public URLs and for
    // signed playback URLs alike (one token covers the attempt's whole tree).
    let base = summary
        .manifest
        .as_deref()
        .and_then(|url| url.strip_suffix(tcoder::jobs::MANIFEST_FILE))
        .map(str::to_owned);
    let manifest: JobResult = match &summary.manifest {
        Some(url) => http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot fetch the manifest {url}"))?
            .json()
            .await
            .context("the manifest is not valid")?,
        None => summary.clone(),
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(id));
    let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} downloading [{bar:30}] {bytes}/{total_bytes} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    for file in &manifest.files {
        let relative = file.key.strip_prefix(&manifest.prefix).unwrap_or(&file.key);
        let path = safe_join(&dir, relative)?;
        bar.set_message(relative.to_owned());
        let url =
            base.as_ref().map_or_else(|| file.url.clone(), |base| format!("{base}{relative}"));
        let written = fetch(&http, &url, &path, &bar).await?;
        if written != file.bytes {
            bail!("{relative}: got {written} bytes, the manifest says {}", file.bytes);
        }
    }
    bar.finish_and_clear();
    eprintln!("{} files, {total} bytes in {}", manifest.files.len(), dir.display());
    Ok(())
}

/// `dir/relative`, refusing anything that would leave `dir`.
fn safe_join(dir: &Path, relative: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(relative);
    if path.is_absolute()
        || path.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!("refusing to write {relative} outside {}", dir.display());
    }
    Ok(dir.join(path))
}

async fn fetch(
    http: &reqwest::Client,
    url: &str,
    path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let response = http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("cannot download {url}"))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut body = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("download of {url} broke off"))?;
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.flush().await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_inside_the_target_folder() {
        let dir = Path::new("/tmp/x");
        assert_eq!(
            safe_join(dir, "hls/360p/seg_00001.m4s").unwrap(),
            dir.join("hls/360p/seg_00001.m4s")
        );
        assert!(safe_join(dir, "../etc/passwd").is_err());
        assert!(safe_join(dir, "/etc/passwd").is_err());
    }
}
