//! The in-progress half of a job's stable HLS URL (`GET /v1/jobs/{id}/hls/…`): while a split
//! title encodes, its playlists are made here from the committed parts' own playlists — the
//! leading run of committed chunks and audio ranges, in title order — with the joiner the
//! stitch uses (`tcoder::hls::join`), so the segments, their names and their initialization
//! segments are the ones the completed set will list. Segments are redirected to the parts'
//! immutable objects; once the job completes, the same paths lead to the stitched set.
//!
//! Only parts their current attempt committed are read (a part's record holds its committing
//! attempt's folder); a pending, running or failed part ends the listing. Nothing here parses
//! media beyond the `stsd` box of initialization segments tcoder's own engine wrote.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::Response;
use tcoder::engine::Part;
use tcoder::hls::{self, Listing, MediaPlaylist, PartRendition};
use tcoder::jobs::{Job, PartResult, PartState};
use tcoder::s3::{self, Key, KeyPrefix};

use super::stream::{playlist_response, redirect_to};
use crate::error::ApiError;
use crate::state::AppState;

/// Playlists and initialization segments are small; a bigger object is not ours.
const MAX_FILE: usize = 4 << 20;
/// Parts' files kept in memory (each a playlist or an init's codec header: a few KiB).
const CACHED: usize = 4096;

/// A committed part's file as this module uses it. Keyed by object key, whose folder names
/// the committing attempt: such a file never changes, so it is cached without expiry.
#[derive(Debug)]
enum PartFile {
    Media {
        playlist: MediaPlaylist,
        /// The `stsd` of its initialization segment.
        codec: Option<Vec<u8>>,
    },
    Master(String),
}

/// Committed parts' files read lately (oldest dropped first).
#[derive(Debug, Default)]
pub(crate) struct PartFiles {
    inner: Mutex<Kept>,
}

/// The files by object key, and the keys in the order they came.
type Kept = (HashMap<String, Arc<PartFile>>, VecDeque<String>);

impl PartFiles {
    fn get(&self, key: &str) -> Option<Arc<PartFile>> {
        self.inner.lock().expect("part files lock").0.get(key).cloned()
    }

    fn keep(&self, key: String, file: Arc<PartFile>) {
        let mut guard = self.inner.lock().expect("part files lock");
        let (files, order) = &mut *guard;
        if files.insert(key.clone(), file).is_none() {
            order.push_back(key);
        }
        while order.len() > CACHED {
            let Some(oldest) = order.pop_front() else { break };
            files.remove(&oldest);
        }
    }
}

/// The committed start of a split title: its leading committed chunks and audio ranges.
struct Leading<'a> {
    chunks: Vec<&'a PartResult>,
    audio: Vec<&'a PartResult>,
    /// Whether the title has audio parts at all.
    has_audio: bool,
}

impl<'a> Leading<'a> {
    /// The leading runs of `parts` (as stored: chunks, then audio ranges, each in title
    /// order) of job `job`. A commit came through Redis from a worker: one naming a folder
    /// outside the job's parts folder ends its run like an uncommitted part.
    fn of(job: &Job, parts: &'a [PartState]) -> Leading<'a> {
        let folder = tcoder::s3::keys::job_parts_prefix(&job.tenant, &job.id);
        let run = |audio: bool| -> Vec<&'a PartResult> {
            parts
                .iter()
                .filter(|p| matches!(p.definition, Some(Part::Audio(_))) == audio)
                .map_while(|p| {
                    p.result.as_ref().filter(|r| p.is_done() && folder.contains(&r.prefix))
                })
                .collect()
        };
        let has_audio = parts.iter().any(|p| matches!(p.definition, Some(Part::Audio(_))));
        Leading { chunks: run(false), audio: run(true), has_audio }
    }

    fn playable(&self) -> bool {
        !self.chunks.is_empty() && (!self.has_audio || !self.audio.is_empty())
    }
}

fn not_yet() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "job.not_playable", "the job does not play yet")
}

/// Serves `path` of a running job's progressive HLS set.
pub(crate) async fn serve(state: &AppState, job: &Job, path: &str) -> Result<Response, ApiError> {
    let parts = state
        .jobs
        .parts(&job.id)
        .await
        .map_err(|e| ApiError::unavailable("cannot read the job's parts", e))?;
    let leading = Leading::of(job, &parts);
    if !leading.playable() {
        return Err(not_yet());
    }
    let variants = variants(state, leading.chunks[0]).await?;
    let tracks = audio_tracks(leading.audio.first().copied());
    if path == "master.m3u8" {
        let audio = (!tracks.is_empty()).then(|| audio_group(job, &leading, &tracks));
        return Ok(playlist_response(master(&variants, audio.as_ref()).into_bytes(), true));
    }
    // `<rendition>/<file>`, the rendition one of the set's: nothing else is a path here.
    let (dir, file) = path.split_once('/').ok_or_else(ApiError::not_found)?;
    let is_video = variants.iter().any(|v| v.name == dir);
    if !is_video && !tracks.iter().any(|t| t == dir) {
        return Err(ApiError::not_found());
    }
    let (own, other) = match is_video {
        true => (&leading.chunks, &leading.audio),
        false => (&leading.audio, &leading.chunks),
    };
    let renditions = media(state, own, dir).await?;
    if file == "index.m3u8" {
        // Only what the other media reaches: a player must not run out of audio (or video)
        // inside what is listed.
        let until = match other.is_empty() {
            true => f64::INFINITY,
            false => {
                let other_dir = match is_video {
                    true => tracks[0].clone(),
                    false => variants[0].name.clone(),
                };
                let others = media(state, other, &other_dir).await?;
                listed_secs(&others)
            }
        };
        let joined = join(&renditions, Listing::Progressive { until });
        return Ok(playlist_response(joined.text.into_bytes(), true));
    }
    let joined = join(&renditions, Listing::Complete);
    // An initialization segment the joined playlist names, or a segment of a listed part.
    let (n, name) = match joined.inits.iter().find(|&&n| hls::init_name(n) == file) {
        Some(&n) => (n, renditions[n].0.init.as_deref().ok_or_else(ApiError::not_found)?),
        None => {
            let n = renditions
                .iter()
                .position(|(playlist, _)| playlist.segments.iter().any(|s| s.name == file))
                .ok_or_else(ApiError::not_found)?;
            (n, file)
        }
    };
    let key = rendition_folder(own[n], dir)?.join(name).map_err(|_| ApiError::not_found())?;
    redirect_to(state, job, &key)
}

/// Where a part keeps rendition `dir`'s files.
fn rendition_folder(part: &PartResult, dir: &str) -> Result<KeyPrefix, ApiError> {
    KeyPrefix::parse(&format!("{}hls/{dir}/", part.prefix.as_str()))
        .map_err(|_| ApiError::not_found())
}

fn join(renditions: &[(MediaPlaylist, Option<Vec<u8>>)], listing: Listing) -> hls::Joined {
    let parts: Vec<PartRendition<'_>> = renditions
        .iter()
        .map(|(playlist, codec)| PartRendition { playlist, codec: codec.as_deref() })
        .collect();
    hls::join(&parts, listing)
}

/// Seconds the parts' playlists of one rendition last together.
fn listed_secs(renditions: &[(MediaPlaylist, Option<Vec<u8>>)]) -> f64 {
    renditions.iter().flat_map(|(p, _)| &p.segments).map(hls::Segment::secs).sum()
}

/// One variant of the first chunk's master playlist.
struct Variant {
    name: String,
    /// Its `EXT-X-STREAM-INF` attributes.
    attributes: String,
}

/// The variants of the set, from the first chunk's master playlist.
async fn variants(state: &AppState, first: &PartResult) -> Result<Vec<Variant>, ApiError> {
    let key = first.prefix.join("hls/master.m3u8").map_err(|_| ApiError::not_found())?;
    let file = match state.part_files.get(key.as_str()) {
        Some(file) => file,
        None => {
            let text = String::from_utf8(read(state, &key).await?)
                .map_err(|_| ApiError::unavailable("a chunk's master playlist", "not UTF-8"))?;
            let file = Arc::new(PartFile::Master(text));
            state.part_files.keep(key.as_str().to_owned(), file.clone());
            file
        }
    };
    let PartFile::Master(text) = &*file else { return Err(ApiError::not_found()) };
    let mut variants = Vec::new();
    let mut pending = None;
    for line in text.lines() {
        if let Some(attributes) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            pending = Some(attributes);
        } else if let Some(attributes) = pending.take() {
            let name = line.trim().strip_suffix("/index.m3u8").unwrap_or_default();
            let plain = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if plain {
                variants.push(Variant { name: name.to_owned(), attributes: attributes.to_owned() });
            }
        }
    }
    if variants.is_empty() {
        return Err(ApiError::unavailable("a chunk's master playlist", "no variant"));
    }
    Ok(variants)
}

/// The audio renditions' folders (`audio`, `audio-1`, …) the first audio range made.
fn audio_tracks(first: Option<&PartResult>) -> Vec<String> {
    let Some(first) = first else { return Vec::new() };
    let mut tracks: Vec<String> = first
        .files
        .iter()
        .filter_map(|f| f.path.strip_prefix("hls/")?.strip_suffix("/index.m3u8"))
        .filter(|dir| dir.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_owned)
        .collect();
    tracks.sort();
    tracks
}

/// The audio group of the master: one rendition per track (the first the default), its
/// codec (the job's) and roughly its rate (the first range's bytes over its seconds).
fn audio_group(job: &Job, leading: &Leading<'_>, tracks: &[String]) -> AudioGroup {
    let codec = match job.spec.audio_codec {
        tcoder::jobs::AudioCodec::Aac => "mp4a.40.2",
        tcoder::jobs::AudioCodec::Opus => "opus",
    };
    let first = leading.audio[0];
    let in_track = |dir: &str| {
        let folder = format!("hls/{dir}/");
        first.files.iter().filter(move |f| f.path.starts_with(&folder) && f.path.ends_with(".m4s"))
    };
    let bytes: u64 = in_track(&tracks[0]).map(|f| f.bytes).sum();
    let segments = in_track(&tracks[0]).count().max(1) as f64;
    // Segments of about four seconds; a generous estimate only steers a player's first pick.
    let bandwidth = (bytes as f64 * 8.0 / (segments * 4.0)).ceil() as u64 + 16_000;
    AudioGroup { tracks: tracks.to_vec(), codec, bandwidth }
}

struct AudioGroup {
    tracks: Vec<String>,
    codec: &'static str,
    bandwidth: u64,
}

/// The progressive master: the first chunk's variants, with the audio group when there is one.
fn master(variants: &[Variant], audio: Option<&AudioGroup>) -> String {
    let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if let Some(audio) = audio {
        for (n, track) in audio.tracks.iter().enumerate() {
            let default = if n == 0 { "YES" } else { "NO" };
            text.push_str(&format!(
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{track}\",DEFAULT={default},AUTOSELECT=YES,URI=\"{track}/index.m3u8\"\n"
            ));
        }
    }
    for variant in variants {
        let mut attributes = variant.attributes.clone();
        if let Some(audio) = audio {
            attributes = with_audio(&attributes, audio);
        }
        text.push_str(&format!("#EXT-X-STREAM-INF:{attributes}\n{}/index.m3u8\n", variant.name));
    }
    text
}

/// A variant's attributes with the audio's rate added to its bandwidths, its codec to its
/// codecs, and its group named.
fn with_audio(attributes: &str, audio: &AudioGroup) -> String {
    let mut out = Vec::new();
    let mut rest = attributes;
    while !rest.is_empty() {
        // An attribute runs to the next comma outside quotes.
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ',' && !quoted
            })
            .map_or(rest.len(), |(i, _)| i);
        let (attribute, next) = rest.split_at(end);
        rest = next.strip_prefix(',').unwrap_or(next);
        let attribute = match attribute.split_once('=') {
            Some((name @ ("BANDWIDTH" | "AVERAGE-BANDWIDTH"), value)) => {
                let value = value.parse::<u64>().unwrap_or(0) + audio.bandwidth;
                format!("{name}={value}")
            }
            Some(("CODECS", value)) => {
                format!("CODECS=\"{},{}\"", value.trim_matches('"'), audio.codec)
            }
            _ => attribute.to_owned(),
        };
        out.push(attribute);
    }
    out.push("AUDIO=\"audio\"".to_owned());
    out.join(",")
}

/// Each of `parts`' playlist of rendition `dir`, with its initialization segment's codec
/// header.
async fn media(
    state: &AppState,
    parts: &[&PartResult],
    dir: &str,
) -> Result<Vec<(MediaPlaylist, Option<Vec<u8>>)>, ApiError> {
    let mut renditions = Vec::with_capacity(parts.len());
    for part in parts {
        let folder = rendition_folder(part, dir)?;
        let key = folder.join("index.m3u8").map_err(|_| ApiError::not_found())?;
        let file = match state.part_files.get(key.as_str()) {
            Some(file) => file,
            None => {
                let bytes = read(state, &key).await?;
                let text = String::from_utf8_lossy(&bytes);
                let playlist = hls::parse_media(&text)
                    .map_err(|e| ApiError::unavailable("a part's playlist", e))?;
                let codec = match &playlist.init {
                    Some(init) => {
                        let init = folder.join(init).map_err(|_| ApiError::not_found())?;
                        hls::sample_description(&read(state, &init).await?).map(<[u8]>::to_vec)
                    }
                    None => None,
                };
                let file = Arc::new(PartFile::Media { playlist, codec });
                state.part_files.keep(key.as_str().to_owned(), file.clone());
                file
            }
        };
        let PartFile::Media { playlist, codec } = &*file else {
            return Err(ApiError::not_found());
        };
        renditions.push((playlist.clone(), codec.clone()));
    }
    Ok(renditions)
}

/// A committed part's file, whole (small files only).
async fn read(state: &AppState, key: &Key) -> Result<Vec<u8>, ApiError> {
    match s3::get_small(&state.s3, &state.bucket, key, MAX_FILE).await {
        Ok(bytes) => Ok(bytes),
        // Committed but gone: the job completed (its parts removed) between the looks.
        Err(s3::S3Error::NotFound(_)) => Err(not_yet()),
        Err(e) => Err(ApiError::unavailable("cannot read a part's file", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_gains_the_audio_group_its_codec_and_its_rate() {
        let audio = AudioGroup { tracks: vec!["audio".into()], codec: "mp4a.40.2", bandwidth: 100 };
        let attributes = "BANDWIDTH=1000,AVERAGE-BANDWIDTH=800,RESOLUTION=640x360,CODECS=\"avc1.64001e\",FRAME-RATE=25.000,VIDEO-RANGE=SDR";
        assert_eq!(
            with_audio(attributes, &audio),
            "BANDWIDTH=1100,AVERAGE-BANDWIDTH=900,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",FRAME-RATE=25.000,VIDEO-RANGE=SDR,AUDIO=\"audio\""
        );
    }
}
