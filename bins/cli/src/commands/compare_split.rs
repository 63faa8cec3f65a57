//! `tcoder compare-engine --split-chunk-secs N`: the whole-title encode against the same title
//! split into chunks, measured side by side in one run:
//!
//! - CPU: every chunk item, the audio item and the stitch, against the whole encode (the
//!   overhead of splitting: pre-roll decoded and dropped, the audio pass reading every packet,
//!   encoder start-up per chunk);
//! - wall time on one core per worker: the whole title on one pinned core (`taskset`, one
//!   encoder thread) against two pinned workers sharing the split items, then the stitch;
//! - a model for N machines from the measured one-core item times (longest first onto the
//!   least loaded machine) plus the stitch, and what a worker killed at 80 % costs either way.
//!
//! Each sandboxed engine run gets its own job folder, as on separate machines.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tcoder::engine::{
    Chunk, EncoderSettings, EngineJob, EngineSpec, Limits, Part, StitchParts, Supervisor, Task,
};
use tokio_util::sync::CancellationToken;

use super::compare::Sample;
use super::split_equivalence::Tolerance;

/// One way of running the engine: how many encoder threads, on which core (if pinned).
struct Runner {
    worker: PathBuf,
    core: Option<usize>,
    threads: usize,
}

impl Runner {
    fn supervisor(&self) -> Supervisor {
        let (program, mut args) = match self.core {
            // taskset execs the worker on one core; the child enters its sandbox as usual.
            Some(core) => (PathBuf::from("taskset"), vec!["-c".to_owned(), core.to_string()]),
            None => (self.worker.clone(), Vec::new()),
        };
        if self.core.is_some() {
            args.push(self.worker.display().to_string());
        }
        args.push("engine".to_owned());
        Supervisor { program, args, limits: super::compare::bench_limits() }
    }

    /// Runs `task` (the whole title, or one of its parts) in a job folder of its own under `scratch`;
    /// returns its figures and its output folder.
    async fn run(
        &self,
        source: &Path,
        spec: &EngineSpec,
        settings: &EncoderSettings,
        task: Task,
        scratch: &Path,
    ) -> anyhow::Result<(Sample, PathBuf)> {
        let folder = tempfile::Builder::new().prefix("item-").tempdir_in(scratch)?.keep();
        self.run_in(&folder, source, spec, settings, task).await
    }

    /// The stitch item, as the coordinator runs it: the items' outputs (`outputs`, chunks
    /// first, the last `audio_ranges` the audio's) moved into its job folder, then
    /// `Task::Stitch`.
    async fn stitch(
        &self,
        source: &Path,
        spec: &EngineSpec,
        settings: &EncoderSettings,
        (outputs, audio_ranges): (&[PathBuf], usize),
        scratch: &Path,
    ) -> anyhow::Result<(Sample, PathBuf)> {
        let folder = tempfile::Builder::new().prefix("stitch-").tempdir_in(scratch)?.keep();
        let chunks = outputs.len() - audio_ranges;
        let (chunks, audio) = outputs.split_at(chunks);
        let parts = StitchParts {
            dir: folder.join("parts"),
            chunks: u32::try_from(chunks.len())?,
            audio: u32::try_from(audio.len())?,
        };
        std::fs::create_dir_all(parts.dir.join("audio"))?;
        for (k, chunk) in (0..).zip(chunks) {
            std::fs::rename(chunk, parts.chunk_dir(k))?;
        }
        for (j, range) in (0..).zip(audio) {
            std::fs::rename(range, parts.audio_dir(j))?;
        }
        self.run_in(&folder, source, spec, settings, Task::Stitch(parts)).await
    }

    async fn run_in(
        &self,
        folder: &Path,
        source: &Path,
        spec: &EngineSpec,
        settings: &EncoderSettings,
        task: Task,
    ) -> anyhow::Result<(Sample, PathBuf)> {
        let input = folder.join("source");
        std::fs::copy(source, &input)?;
        let job = EngineJob {
            input,
            output_dir: folder.join("out"),
            spec: spec.clone(),
            limits: Limits::default(),
            settings: EncoderSettings { threads: self.threads, ..settings.clone() },
            task,
            sidecars: Vec::new(),
            ladder: None,
        };
        let started = Instant::now();
        let done = self
            .supervisor()
            .run(&job, folder, None, CancellationToken::new())
            .await
            .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
        Ok((Sample { cpu: done.cpu_secs, wall: started.elapsed().as_secs_f64() }, job.output_dir))
    }
}

/// The split items of a title: its chunks, then its audio ranges (as the worker plans them).
fn items(chunks: &[Chunk]) -> Vec<Part> {
    let audio = tcoder::engine::plan::audio_ranges(chunks, tcoder::engine::plan::AUDIO_RANGE_SECS);
    chunks.iter().cloned().map(Part::Video).chain(audio.into_iter().map(Part::Audio)).collect()
}

/// Longest first onto the least loaded of `machines`: the makespan of `times`.
fn makespan(times: &[f64], machines: usize) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut load = vec![0.0f64; machines.max(1)];
    for time in sorted {
        let least = load.iter_mut().min_by(|a, b| a.total_cmp(b)).expect("one machine at least");
        *least += time;
    }
    load.into_iter().fold(0.0, f64::max)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) async fn run(
    worker: &Path,
    source: &Path,
    spec: &EngineSpec,
    settings: &EncoderSettings,
    chunks: &[Chunk],
    repeats: usize,
    tolerance: &Tolerance<'_>,
) -> anyhow::Result<Value> {
    anyhow::ensure!(chunks.len() >= 2, "the title is too short to split at that chunk length");
    let all_cores = Runner { worker: worker.to_path_buf(), core: None, threads: 0 };
    let pinned = |core| Runner { worker: worker.to_path_buf(), core: Some(core), threads: 1 };
    let (mut cpu_ratios, mut wall_ratios) = (Vec::new(), Vec::new());
    let (mut last, mut equivalence) = (Value::Null, Value::Null);
    let audio_ranges = items(chunks).len() - chunks.len();
    // Interleaved, so machine noise hits both ways alike.
    for _ in 0..repeats.max(1) {
        let scratch = tempfile::tempdir()?;
        let (whole, whole_out) =
            all_cores.run(source, spec, settings, Task::Whole, scratch.path()).await?;
        let mut split_items = Vec::new();
        let mut outputs = Vec::new();
        for part in items(chunks) {
            let (sample, out) =
                all_cores.run(source, spec, settings, part.into(), scratch.path()).await?;
            split_items.push(sample);
            outputs.push(out);
        }
        let (stitched, stitched_out) = all_cores
            .stitch(source, spec, settings, (&outputs, audio_ranges), scratch.path())
            .await?;
        if equivalence.is_null() {
            equivalence = super::split_equivalence::check(
                source,
                &whole_out,
                &stitched_out,
                chunks.len(),
                tolerance,
            )?;
        }
        let split_cpu = split_items.iter().map(|s| s.cpu).sum::<f64>() + stitched.cpu;

        // One core per worker: the whole title on one, the items on two.
        let (one_core, _) =
            pinned(0).run(source, spec, settings, Task::Whole, scratch.path()).await?;
        let queue = Arc::new(Mutex::new(items(chunks).into_iter().enumerate().collect::<Vec<_>>()));
        let started = Instant::now();
        let lanes = (0..2).map(|core| {
            let (queue, runner) = (queue.clone(), pinned(core));
            let (source, spec, settings) = (source.to_path_buf(), spec.clone(), settings.clone());
            let scratch = scratch.path().to_path_buf();
            async move {
                let mut done = Vec::new();
                loop {
                    let next = queue.lock().expect("queue lock").pop();
                    let Some((n, part)) = next else { break };
                    let (sample, out) =
                        runner.run(&source, &spec, &settings, part.into(), &scratch).await?;
                    done.push((n, sample, out));
                }
                anyhow::Ok(done)
            }
        });
        let mut pinned_items = Vec::new();
        for lane in futures_util::future::join_all(lanes).await {
            pinned_items.extend(lane?);
        }
        pinned_items.sort_by_key(|(n, ..)| *n);
        let pinned_outputs: Vec<PathBuf> =
            pinned_items.iter().map(|(_, _, out)| out.clone()).collect();
        let (pinned_stitch, _) = pinned(0)
            .stitch(source, spec, settings, (&pinned_outputs, audio_ranges), scratch.path())
            .await?;
        let two_cores = started.elapsed().as_secs_f64();
        let item_walls: Vec<f64> = pinned_items.iter().map(|(_, s, _)| s.wall).collect();
        let model: Vec<Value> = [1usize, 2, 4, 8, 16]
            .iter()
            .map(|&machines| {
                let wall = makespan(&item_walls, machines) + pinned_stitch.wall;
                json!({ "machines": machines, "wall_secs": wall, "ratio_to_one_machine_whole": wall / one_core.wall })
            })
            .collect();
        let largest_chunk_cpu =
            split_items[..chunks.len()].iter().map(|s| s.cpu).fold(0.0, f64::max);
        cpu_ratios.push(split_cpu / whole.cpu);
        wall_ratios.push(two_cores / one_core.wall);
        last = json!({
            "whole": { "cpu_secs": whole.cpu, "wall_secs": whole.wall },
            "split": {
                "cpu_secs": split_cpu,
                "items": split_items.iter().zip(items(chunks)).map(|(s, part)| json!({ "part": part, "cpu_secs": s.cpu, "wall_secs": s.wall })).collect::<Vec<_>>(),
                "stitch_secs": stitched.wall,
            },
            "one_core_per_worker": {
                "whole_on_one_wall_secs": one_core.wall,
                "split_on_two_wall_secs": two_cores,
                "item_wall_secs": item_walls,
                "stitch_secs": pinned_stitch.wall,
            },
            "model": model,
            "worker_killed_at_80_percent": {
                "whole_cpu_lost_secs": 0.8 * whole.cpu,
                "split_cpu_lost_at_most_secs": largest_chunk_cpu,
            },
        });
    }
    Ok(json!({
        "input": source,
        "chunks": chunks.len(),
        "repeats": repeats.max(1),
        "ratio_split_to_whole_cpu_median": median(&mut cpu_ratios),
        "ratio_two_cores_split_to_one_core_whole_wall_median": median(&mut wall_ratios),
        "last_run": last,
        "equivalence": equivalence,
    }))
}
