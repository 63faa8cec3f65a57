//! Benchmark-only no-op engine (compiled only with the `bench` feature, which no release
//! build enables). It isolates the control plane's cost: the worker still spawns the sandboxed
//! child, sends it the job and reads its report, but the child does no media work.
//!
//! - `TCODER_BENCH_NOOP_ENGINE=child`: the sandboxed child is spawned as usual and reports
//!   success without reading the source (the cost of starting the engine process included).
//! - `TCODER_BENCH_NOOP_ENGINE=in-process`: no child at all; the supervisor returns the no-op
//!   report itself (the control plane alone).
//! - `TCODER_BENCH_OUTPUT_BYTES=<n>`: it also writes one output file of `n` bytes (sparse),
//!   which the worker uploads: the worker's memory while uploading a large output.

use std::collections::HashMap;

use super::{EngineError, EngineJob, EngineReport, ErrorCode, MediaInfo, Mode, OutputFile};

const NOOP: &str = "TCODER_BENCH_NOOP_ENGINE";
const OUTPUT_BYTES: &str = "TCODER_BENCH_OUTPUT_BYTES";

/// The bench variables the supervisor passes to the child (whose environment is cleared).
pub fn forwarded_env() -> HashMap<String, String> {
    [NOOP, OUTPUT_BYTES]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_owned(), value)))
        .collect()
}

/// The no-op engine's outcome, or `None` when the real engine should run.
pub fn noop(job: &EngineJob) -> Option<Result<EngineReport, EngineError>> {
    if std::env::var(NOOP).as_deref() != Ok("child") {
        return None;
    }
    Some(write_output(job))
}

/// The in-process no-op engine's run, or `None` when a child should be spawned.
pub fn in_process(job: &EngineJob) -> Option<Result<super::EngineRun, EngineError>> {
    if std::env::var(NOOP).as_deref() != Ok("in-process") {
        return None;
    }
    Some(write_output(job).map(|report| super::EngineRun {
        report,
        cpu_secs: 0.0,
        wall_secs: 0.0,
        max_rss_bytes: 0,
        sandbox: super::protocol::SandboxReport { network_isolated: true, ..Default::default() },
    }))
}

fn write_output(job: &EngineJob) -> Result<EngineReport, EngineError> {
    let io = |e: std::io::Error| EngineError::new(ErrorCode::Failed, e.to_string());
    let mut files = Vec::new();
    if let Some(bytes) = std::env::var(OUTPUT_BYTES).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::fs::create_dir_all(&job.output_dir).map_err(io)?;
        let file = std::fs::File::create(job.output_dir.join("bench.bin")).map_err(io)?;
        file.set_len(bytes).map_err(io)?;
        files.push(OutputFile {
            path: "bench.bin".into(),
            bytes,
            content_type: "application/octet-stream".into(),
        });
    }
    let media: MediaInfo = serde_json::from_value(serde_json::json!({
        "format": "noop", "duration_secs": 1.0, "bit_rate": null, "streams": 1, "audio": null,
        "video": { "index": 0, "codec": "noop", "width": 16, "height": 16, "fps": 1.0,
                   "bit_rate": null, "pixel_format": "yuv420p" },
    }))
    .expect("a valid media description");
    Ok(EngineReport {
        media,
        mode: Mode::Copy,
        renditions: Vec::new(),
        hls_master: None,
        thumbnails: None,
        files,
        frames: 0,
        decode_errors: 0,
        probe_secs: 0.0,
        deinterlaced: false,
        loudness: None,
        captions: Vec::new(),
        audio_tracks: Vec::new(),
        ladder: None,
    })
}
