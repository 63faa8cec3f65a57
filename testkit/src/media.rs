//! Tiny sample media generated with FFmpeg's lavfi sources and cached under
//! `target/testkit-media/`, so each clip is encoded once per checkout, not once per test.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;

/// What to generate. Defaults: 320×240, 25 fps, 1 s, H.264 + AAC in MP4, `testsrc2` pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClipSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Duration in milliseconds.
    pub duration_ms: u32,
    /// lavfi video source, e.g. `testsrc2` (easy to encode) or `mandelbrot`.
    pub source: String,
    /// Add a sine-tone audio track.
    pub audio: bool,
    /// Output file extension / container: `mp4`, `mkv`, `webm`, `mov`.
    pub container: String,
    /// FFmpeg video encoder, e.g. `libx264`, `libvpx-vp9`.
    pub video_codec: String,
    /// A keyframe every this many frames (`-g`); `None`: the encoder's default (x264: 250).
    pub keyframe_interval: Option<u32>,
}

impl Default for ClipSpec {
    fn default() -> ClipSpec {
        ClipSpec {
            width: 320,
            height: 240,
            fps: 25,
            duration_ms: 1000,
            source: "testsrc2".to_owned(),
            audio: true,
            container: "mp4".to_owned(),
            video_codec: "libx264".to_owned(),
            keyframe_interval: None,
        }
    }
}

/// The default tiny clip: 1 s 320×240 H.264 + AAC MP4.
pub fn tiny_mp4() -> PathBuf {
    clip(&ClipSpec::default())
}

/// A name for a file being written, unique across processes *and* threads (tests of one
/// binary run in parallel threads and may make the same file at once); whoever renames last
/// wins, with identical content.
pub(crate) fn partial_name(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{}-{n}-{name}", std::process::id())
}

/// Generates (or reuses) the clip and returns its path.
pub fn clip(spec: &ClipSpec) -> PathBuf {
    let dir = crate::workspace_root().join("target/testkit-media");
    std::fs::create_dir_all(&dir).expect("create media cache dir");
    let mut hasher = DefaultHasher::new();
    spec.hash(&mut hasher);
    let path = dir.join(format!("{:016x}.{}", hasher.finish(), spec.container));
    if path.exists() {
        return path;
    }
    // Write under a unique name, then rename: concurrent test processes never see half a file.
    let partial = dir.join(partial_name(&format!("{:016x}.{}", hasher.finish(), spec.container)));
    let seconds = format!("{:.3}", f64::from(spec.duration_ms) / 1000.0);
    let video = format!("{}=size={}x{}:rate={}", spec.source, spec.width, spec.height, spec.fps);
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-y", "-f", "lavfi", "-i", &video]);
    if spec.audio {
        command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    }
    command.args(["-t", &seconds, "-c:v", &spec.video_codec, "-pix_fmt", "yuv420p"]);
    if spec.video_codec == "libx264" {
        command.args(["-preset", "ultrafast"]);
    }
    if let Some(interval) = spec.keyframe_interval {
        command.args(["-g", &interval.to_string()]);
    }
    if spec.audio {
        let audio_codec = if spec.container == "webm" { "libopus" } else { "aac" };
        command.args(["-c:a", audio_codec, "-shortest"]);
    }
    command.arg(&partial);
    let output = command.output().expect("run ffmpeg (run scripts/setup.sh to install it)");
    assert!(
        output.status.success(),
        "ffmpeg failed for {spec:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &path).expect("move clip into cache");
    path
}

/// The duration ffprobe (a reader nobody here wrote) reads from the container at `path` (a
/// file or a URL).
pub fn format_duration(path: impl AsRef<std::ffi::OsStr>) -> f64 {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("a duration")
}

/// The header tags and the media lines (init sections, segments and their durations) of an
/// HLS media playlist, for comparing one version of a growing playlist with the next.
pub fn playlist_lines(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut header, mut media) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let is_media =
            line.starts_with("#EXTINF") || line.starts_with("#EXT-X-MAP") || !line.starts_with('#');
        if is_media { media.push(line.to_owned()) } else { header.push(line.to_owned()) }
    }
    (header, media)
}

/// The FFmpeg built with libvmaf that the set-up installs (the `imageio-ffmpeg` wheel's static
/// FFmpeg 9: Debian's FFmpeg has no libvmaf), for measurements independent of the engine.
pub fn vmaf_ffmpeg() -> PathBuf {
    let python = crate::workspace_root().join(".tools/venv/bin/python");
    let output = Command::new(&python)
        .args(["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"])
        .output()
        .expect("run .tools/venv/bin/python (run scripts/setup.sh)");
    assert!(output.status.success(), "imageio-ffmpeg missing: run scripts/setup.sh");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Per-frame VMAF (model `vmaf_v0.6.1`) of `distorted` against `reference` scaled to
/// `width`×`height` (bicubic, as the engine scales), measured by FFmpeg's libvmaf filter: the
/// frames' scores in presentation order.
pub fn vmaf_per_frame(
    distorted: &std::path::Path,
    reference: &std::path::Path,
    (width, height): (u32, u32),
) -> Vec<f64> {
    let log = tempfile_path("vmaf.json");
    let graph = format!(
        "[0:v]format=yuv420p,setpts=PTS-STARTPTS[d];\
         [1:v]scale={width}:{height}:flags=bicubic,format=yuv420p,setpts=PTS-STARTPTS[r];\
         [d][r]libvmaf=model=version=vmaf_v0.6.1:log_fmt=json:log_path={}",
        log.display()
    );
    let output = Command::new(vmaf_ffmpeg())
        .args(["-v", "error", "-i"])
        .arg(distorted)
        .arg("-i")
        .arg(reference)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()
        .expect("run the libvmaf FFmpeg");
    assert!(output.status.success(), "libvmaf: {}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&log).expect("libvmaf log")).expect("log JSON");
    let _ = std::fs::remove_file(&log);
    json["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| f["metrics"]["vmaf"].as_f64().expect("vmaf score"))
        .collect()
}

/// A path for a scratch file under `target/` (removed by its user).
fn tempfile_path(name: &str) -> PathBuf {
    let dir = crate::workspace_root().join("target/testkit-media");
    std::fs::create_dir_all(&dir).expect("create media cache dir");
    dir.join(partial_name(name))
}
