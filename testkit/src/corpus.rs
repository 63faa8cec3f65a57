//! The malicious and malformed input corpus (docs/DESIGN.md, "Untrusted media": C1–C16),
//! generated at test time with FFmpeg and small scripts (nothing large is committed). Deterministic files
//! are cached under `target/testkit-media/corpus/`; files that embed a canary address or path
//! are written into the caller's directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::media::{ClipSpec, clip};

fn cache_dir() -> PathBuf {
    let dir = crate::workspace_root().join("target/testkit-media/corpus");
    std::fs::create_dir_all(&dir).expect("corpus cache dir");
    dir
}

/// Runs ffmpeg with `args` writing `name` into the cache (once); returns its path.
pub(crate) fn cached(name: &str, args: &[&str]) -> PathBuf {
    let path = cache_dir().join(name);
    if path.exists() {
        return path;
    }
    let partial = cache_dir().join(crate::media::partial_name(name));
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(&partial)
        .output()
        .expect("run ffmpeg (scripts/setup.sh installs it)");
    assert!(
        output.status.success(),
        "generating {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &path).expect("move into cache");
    path
}

/// C1: a valid 3 s 320×240 H.264/AAC MP4.
pub fn ok_mp4() -> PathBuf {
    clip(&ClipSpec { duration_ms: 3000, ..ClipSpec::default() })
}

/// C1: VP8 + Opus `WebM`.
pub fn ok_webm() -> PathBuf {
    clip(&ClipSpec {
        duration_ms: 2000,
        container: "webm".into(),
        video_codec: "libvpx".into(),
        ..ClipSpec::default()
    })
}

/// C1: HEVC in Matroska.
pub fn ok_hevc_mkv() -> PathBuf {
    clip(&ClipSpec {
        duration_ms: 2000,
        container: "mkv".into(),
        video_codec: "libx265".into(),
        ..ClipSpec::default()
    })
}

/// A 10 s 640×360 clip to damage (C4, C5).
fn base_mp4() -> PathBuf {
    clip(&ClipSpec { width: 640, height: 360, duration_ms: 10_000, ..ClipSpec::default() })
}

/// Writes `bytes` as `name` into the cache.
pub(crate) fn cached_bytes(name: &str, bytes: impl FnOnce() -> Vec<u8>) -> PathBuf {
    let path = cache_dir().join(name);
    if !path.exists() {
        let partial = cache_dir().join(crate::media::partial_name(name));
        std::fs::write(&partial, bytes()).expect("write corpus file");
        std::fs::rename(&partial, &path).expect("move into cache");
    }
    path
}

/// C2: zero bytes.
pub fn zero() -> PathBuf {
    cached_bytes("zero.mp4", Vec::new)
}

/// C3: a text file named `.mp4`.
pub fn text() -> PathBuf {
    cached_bytes("text.mp4", || b"this is not a video\n".to_vec())
}

/// C4: the first 1,000 bytes of a valid MP4.
pub fn trunc_header() -> PathBuf {
    cached_bytes("trunc_header.mp4", || {
        std::fs::read(base_mp4()).expect("base clip")[..1000].to_vec()
    })
}

/// C4: the first half of a valid MP4 (header intact, media cut off).
pub fn trunc50() -> PathBuf {
    // A faststart copy, so the index is at the front and survives the cut.
    let faststart = cached(
        "base_faststart.mp4",
        &["-i", base_mp4().to_str().expect("utf-8 path"), "-c", "copy", "-movflags", "+faststart"],
    );
    cached_bytes("trunc50.mp4", || {
        let bytes = std::fs::read(&faststart).expect("base clip");
        bytes[..bytes.len() / 2].to_vec()
    })
}

/// C5: 200 bit flips after the first 4 KiB (fixed seed).
pub fn bitflip() -> PathBuf {
    cached_bytes("bitflip.mp4", || {
        let mut bytes = std::fs::read(base_mp4()).expect("base clip");
        let mut state = 1234u64;
        for _ in 0..200 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let position = 4096 + (state >> 33) as usize % (bytes.len() - 4096);
            bytes[position] ^= 1 << ((state >> 20) % 8);
        }
        bytes
    })
}

/// C6: an HLS playlist pointing at a loopback canary, named `.mp4`.
pub fn ssrf(dir: &Path, canary_port: u16) -> PathBuf {
    write(
        dir,
        "ssrf.mp4",
        &format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\nhttp://127.0.0.1:{canary_port}/seg.ts?ssrf=1\n#EXT-X-ENDLIST\n"
        ),
    )
}

/// C7: an HLS playlist pointing at `/etc/passwd`.
pub fn lfi_hls(dir: &Path) -> PathBuf {
    write(
        dir,
        "lfi_hls.mp4",
        "#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    )
}

/// C8: playlists reaching a canary video planted in `<dir>/other_tenant/`; returns
/// (canary file, [`xtenant.mp4`, `xtenant_ts.mp4`, `xconcat.mp4`]).
pub fn cross_tenant(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let other = dir.join("other_tenant");
    std::fs::create_dir_all(&other).expect("canary dir");
    let canary = other.join("secret_clip.ts");
    let output = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-i",
            base_mp4().to_str().expect("utf-8"),
            "-c",
            "copy",
            "-f",
            "mpegts",
        ])
        .arg(&canary)
        .output()
        .expect("ffmpeg");
    assert!(output.status.success());
    let mp4_canary = other.join("secret_input.mp4");
    std::fs::copy(base_mp4(), &mp4_canary).expect("copy canary");
    let files = vec![
        write(
            dir,
            "xtenant.mp4",
            &format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{}\n#EXT-X-ENDLIST\n",
                mp4_canary.display()
            ),
        ),
        write(
            dir,
            "xtenant_ts.mp4",
            &format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{}\n#EXT-X-ENDLIST\n",
                canary.display()
            ),
        ),
        write(dir, "xconcat.mp4", "ffconcat version 1.0\nfile other_tenant/secret_clip.ts\n"),
    ];
    (canary, files)
}

/// C9: concat scripts with an absolute path and with nested protocols.
pub fn concat_tricks(dir: &Path) -> Vec<PathBuf> {
    vec![
        write(dir, "concat_abs.mp4", "ffconcat version 1.0\nfile /etc/passwd\n"),
        write(
            dir,
            "concat_proto.mp4",
            "ffconcat version 1.0\nfile 'subfile,,start,0,end,100,,:/etc/passwd'\nfile 'data:text/plain;base64,aGVsbG8='\n",
        ),
    ]
}

/// C10: Matroska with two PNG frames of 16000×16000 (monochrome, so it is cheap to make
/// but still a 256-megapixel decode).
pub fn bomb16k() -> PathBuf {
    cached(
        "bomb16k.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=16000x16000:r=1",
            "-frames:v",
            "2",
            "-pix_fmt",
            "monob",
            "-c:v",
            "png",
            "-f",
            "matroska",
        ],
    )
}

/// C11: 1 KB, two frames 10 hours apart: declares a 10 h duration.
pub fn long_lie() -> PathBuf {
    cached(
        "long_lie.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=16x16:r=1",
            "-frames:v",
            "2",
            "-vf",
            "setpts=N*36000/TB",
            "-c:v",
            "libx264",
            "-fps_mode",
            "passthrough",
        ],
    )
}

/// C12: 1000 fps.
pub fn fps_bomb() -> PathBuf {
    cached(
        "fps_bomb.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=16x16:r=1000",
            "-t",
            "5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    )
}

/// C13: one video stream and 64 copies of an audio stream.
pub fn streams_bomb() -> PathBuf {
    let mut args: Vec<String> = [
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=16x16:r=5",
        "-f",
        "lavfi",
        "-i",
        "sine",
        "-t",
        "1",
        "-map",
        "0:v",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for _ in 0..64 {
        args.extend(["-map".to_owned(), "1:a".to_owned()]);
    }
    args.extend(["-c:v", "libx264", "-c:a", "flac"].iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cached("streams_bomb.mkv", &args)
}

/// C14: `MagicYUV` (a decoder with a known heap overflow; not allowlisted).
pub fn magic() -> PathBuf {
    cached(
        "magic.mkv",
        &["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "1", "-c:v", "magicyuv"],
    )
}

/// C15: subtitles only.
pub fn sub_only() -> PathBuf {
    let srt = cached_bytes("sub.srt", || b"1\n00:00:00,000 --> 00:00:01,000\nhello\n".to_vec());
    cached("sub_only.mkv", &["-i", srt.to_str().expect("utf-8"), "-c:s", "srt"])
}

/// C15: audio only.
pub fn audio_only() -> PathBuf {
    cached("audio_only.m4a", &["-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:a", "aac"])
}

/// C16: jittered timestamps shifted negative.
pub fn vfr_weird() -> PathBuf {
    cached(
        "vfr_weird.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "2",
            "-vf",
            "setpts='PTS+random(0)*0.02/TB'",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-fps_mode",
            "passthrough",
            "-output_ts_offset",
            "-10",
        ],
    )
}

/// A longer 720p clip for limit tests (CPU, memory, disk).
pub fn heavy_720p() -> PathBuf {
    clip(&ClipSpec {
        width: 1280,
        height: 720,
        duration_ms: 10_000,
        source: "mandelbrot".into(),
        ..ClipSpec::default()
    })
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write corpus file");
    path
}
