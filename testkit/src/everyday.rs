//! Everyday media: the files phones, cameras, screen recorders and editors produce, generated
//! with the FFmpeg CLI at test time (tiny clips, cached under `target/testkit-media/corpus/`).
//! Each case is a class of real-world file the engine must turn into correct, upright,
//! square-pixel, progressive outputs of the right duration — or refuse with an `input.*` code.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::corpus::{cached, cached_bytes};

/// What a case must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Valid outputs. `marker`: the displayed picture has a white block in its top-left third
    /// (so uprightness can be checked on the outputs); `interlaced`: the source is interlaced
    /// (outputs must be judged progressive).
    Plays { marker: bool, interlaced: bool },
    /// Refused with this `input.*` code.
    Refused(&'static str),
}

/// One everyday file.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub path: PathBuf,
    pub expect: Expect,
}

const PLAYS: Expect = Expect::Plays { marker: false, interlaced: false };
const UPRIGHT: Expect = Expect::Plays { marker: true, interlaced: false };
const INTERLACED: Expect = Expect::Plays { marker: false, interlaced: true };

/// `-i` arguments of a 2 s test pattern of `size` at `rate`.
fn pattern(size: &str, rate: &str, secs: &str) -> Vec<String> {
    ["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate={rate}:duration={secs}")]
        .map(str::to_owned)
        .to_vec()
}

/// `-i` arguments of a 440 Hz tone lasting `secs`.
fn tone(secs: &str) -> Vec<String> {
    tone_at("440", secs)
}

/// `-i` arguments of a tone of `hz` lasting `secs`.
fn tone_at(hz: &str, secs: &str) -> Vec<String> {
    ["-f", "lavfi", "-i", &format!("sine=frequency={hz}:sample_rate=48000:duration={secs}")]
        .map(str::to_owned)
        .to_vec()
}

fn x264() -> Vec<String> {
    ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"].map(str::to_owned).to_vec()
}

fn make(name: &str, parts: &[Vec<String>]) -> PathBuf {
    let args: Vec<String> = parts.concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cached(name, &args)
}

fn strs(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// A rotated phone-style file: the *displayed* picture (`display`, e.g. `180x320`) has a white
/// block in its top-left third; it is stored transformed by `stored_filter` and tagged with
/// the display rotation `rotate` (what `ffprobe` reports as `rotation`), so a player that
/// applies the display matrix shows the block top-left.
fn rotated(name: &str, display: &str, stored_filter: &str, rotate: u16, hevc: bool) -> PathBuf {
    let (w, h) = display.split_once('x').expect("WxH");
    let (w, h): (u32, u32) = (w.parse().expect("width"), h.parse().expect("height"));
    let picture = format!(
        "color=c=0x303030:s={display}:r=25:d=2,drawbox=x=0:y=0:w={}:h={}:color=white:t=fill",
        w / 3,
        h / 3
    );
    let codec = if hevc {
        strs(&[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "log-level=error",
        ])
    } else {
        x264()
    };
    let extension = name.rsplit('.').next().expect("extension");
    let stage = make(
        &format!("stage-{name}.{extension}"),
        &[
            strs(&["-f", "lavfi", "-i", &picture]),
            tone("2"),
            strs(&["-vf", stored_filter]),
            codec,
            strs(&["-c:a", "aac"]),
        ],
    );
    // FFmpeg 5.1 turns the `rotate` tag into a display matrix only when stream-copying.
    let rotate = format!("rotate={rotate}");
    cached(name, &["-i", stage.to_str().expect("utf-8"), "-c", "copy", "-metadata:s:v:0", &rotate])
}

/// Every everyday case, generated on first use.
pub fn all() -> Vec<Case> {
    let case = |name: &'static str, path: PathBuf, expect: Expect| Case { name, path, expect };
    let srt = cached_bytes("long-cue.srt", || {
        b"1\n00:00:00,500 --> 00:00:01,000\nhello\n\n2\n00:00:04,000 --> 00:00:05,000\nlate\n"
            .to_vec()
    });
    vec![
        // Phones: display matrix rotations (ffprobe `rotation` 90 = turn 90° counter-clockwise
        // to display; -90/270 is the usual portrait iPhone file).
        case(
            "rot90_h264_mp4",
            rotated("rot90_h264.mp4", "180x320", "transpose=clock", 90, false),
            UPRIGHT,
        ),
        case(
            "rot90_hevc10_mov",
            rotated("rot90_hevc10.mov", "180x320", "transpose=clock", 90, true),
            UPRIGHT,
        ),
        case(
            "rot180_h264_mov",
            rotated("rot180_h264.mov", "320x180", "hflip,vflip", 180, false),
            UPRIGHT,
        ),
        case(
            "rot180_hevc10_mp4",
            rotated("rot180_hevc10.mp4", "320x180", "hflip,vflip", 180, true),
            UPRIGHT,
        ),
        case(
            "rot270_h264_mp4",
            rotated("rot270_h264.mp4", "180x320", "transpose=cclock", 270, false),
            UPRIGHT,
        ),
        case(
            "rot270_hevc10_mov",
            rotated("rot270_hevc10.mov", "180x320", "transpose=cclock", 270, true),
            UPRIGHT,
        ),
        // Cameras: non-square pixels.
        case(
            "anamorphic_pal_h264",
            make(
                "anamorphic_pal.mp4",
                &[
                    pattern("720x576", "25", "1"),
                    tone("1"),
                    strs(&["-vf", "setsar=64/45"]),
                    x264(),
                    strs(&["-c:a", "aac"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "anamorphic_ntsc_dv_mov",
            make(
                "anamorphic_ntsc_dv.mov",
                &[
                    pattern("720x480", "30000/1001", "1"),
                    tone("1"),
                    strs(&[
                        "-c:v",
                        "dvvideo",
                        "-pix_fmt",
                        "yuv411p",
                        "-aspect",
                        "16:9",
                        "-c:a",
                        "pcm_s16le",
                    ]),
                ],
            ),
            PLAYS,
        ),
        // Broadcast and camcorders: interlaced, both field orders.
        case(
            "interlaced_tff_h264",
            make(
                "interlaced_tff.mp4",
                &[
                    pattern("320x240", "50", "2"),
                    tone("2"),
                    strs(&["-vf", "tinterlace=interleave_top,setfield=tff"]),
                    x264(),
                    strs(&["-flags", "+ildct+ilme", "-c:a", "aac"]),
                ],
            ),
            INTERLACED,
        ),
        case(
            "interlaced_bff_mpeg2_mkv",
            make(
                "interlaced_bff.mkv",
                &[
                    pattern("320x240", "50", "2"),
                    tone("2"),
                    strs(&[
                        "-vf",
                        "tinterlace=interleave_bottom,setfield=bff",
                        "-c:v",
                        "mpeg2video",
                        "-flags",
                        "+ildct+ilme",
                        "-top",
                        "0",
                        "-c:a",
                        "mp2",
                    ]),
                ],
            ),
            INTERLACED,
        ),
        // Editors and recorders: timing.
        case(
            "audio_longer_than_video",
            make(
                "audio_longer.mp4",
                &[pattern("320x240", "25", "2"), tone("2.4"), x264(), strs(&["-c:a", "aac"])],
            ),
            PLAYS,
        ),
        case(
            "audio_shorter_and_late",
            make(
                "audio_shorter_late.mp4",
                &[
                    pattern("320x240", "25", "2"),
                    strs(&["-itsoffset", "0.3"]),
                    tone("1.2"),
                    x264(),
                    strs(&["-c:a", "aac"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "subtitle_longer_than_video",
            make(
                "subtitle_longer.mkv",
                &[
                    pattern("320x240", "25", "2"),
                    tone("2"),
                    strs(&["-i", srt.to_str().expect("utf-8")]),
                    x264(),
                    strs(&["-c:a", "aac", "-c:s", "srt", "-map", "0", "-map", "1", "-map", "2"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "vfr_30_then_15",
            make(
                "vfr.mp4",
                &[
                    pattern("320x240", "30", "2"),
                    tone("2"),
                    strs(&["-vf", "select='lt(n\\,30)+not(mod(n\\,2))'", "-fps_mode", "vfr"]),
                    x264(),
                    strs(&["-c:a", "aac"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "one_frame",
            make(
                "one_frame.mp4",
                &[pattern("320x240", "25", "1"), strs(&["-frames:v", "1"]), x264()],
            ),
            PLAYS,
        ),
        case(
            "short_0_3s",
            make(
                "short_0_3.mp4",
                &[pattern("320x240", "25", "0.3"), tone("0.3"), x264(), strs(&["-c:a", "aac"])],
            ),
            PLAYS,
        ),
        case("tiny_16x16", tiny(), Expect::Refused("input.too_small_dimensions")),
        // Containers beyond MP4/Matroska.
        case(
            "mpegts_h264_bframes",
            make(
                "bframes.ts",
                &[
                    pattern("320x240", "25", "2"),
                    tone("2"),
                    strs(&[
                        "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-pix_fmt",
                        "yuv420p", "-c:a", "aac",
                    ]),
                ],
            ),
            PLAYS,
        ),
        case(
            "avi_mpeg4_asp_mp3",
            make(
                "asp_mp3.avi",
                &[
                    pattern("320x240", "25", "2"),
                    tone("2"),
                    strs(&["-c:v", "mpeg4", "-vtag", "xvid", "-c:a", "libmp3lame"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "flv_h264_aac",
            make(
                "h264_aac.flv",
                &[pattern("320x240", "25", "2"), tone("2"), x264(), strs(&["-c:a", "aac"])],
            ),
            PLAYS,
        ),
        case(
            "mpeg_ps_mpeg2_mp2",
            make(
                "mpeg2_mp2.mpg",
                &[
                    pattern("320x240", "25", "2"),
                    tone("2"),
                    strs(&["-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpeg"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "mjpeg_pcm_mov",
            make(
                "mjpeg_pcm.mov",
                &[
                    pattern("320x240", "25", "1"),
                    tone("1"),
                    strs(&["-c:v", "mjpeg", "-c:a", "pcm_s16le"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "dnxhr_mov",
            make(
                "dnxhr.mov",
                &[
                    pattern("320x240", "25", "1"),
                    tone("1"),
                    strs(&[
                        "-c:v",
                        "dnxhd",
                        "-profile:v",
                        "dnxhr_lb",
                        "-pix_fmt",
                        "yuv422p",
                        "-c:a",
                        "pcm_s24le",
                    ]),
                ],
            ),
            PLAYS,
        ),
        // Slow motion, odd sizes, audio layouts.
        case(
            "slow_motion_240fps",
            make(
                "slowmo_240.mp4",
                &[pattern("320x240", "240", "1"), tone("1"), x264(), strs(&["-c:a", "aac"])],
            ),
            PLAYS,
        ),
        case(
            "odd_size_444",
            make(
                "odd_444.mp4",
                &[
                    pattern("330x250", "25", "1"),
                    tone("1"),
                    strs(&[
                        "-vf",
                        "format=yuv444p,crop=321:241",
                        "-c:v",
                        "libx264",
                        "-preset",
                        "ultrafast",
                        "-c:a",
                        "aac",
                    ]),
                ],
            ),
            PLAYS,
        ),
        case(
            "surround_5_1",
            make(
                "surround.mp4",
                &[
                    pattern("320x240", "25", "1"),
                    tone("1"),
                    x264(),
                    strs(&["-c:a", "aac", "-af", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0"]),
                ],
            ),
            PLAYS,
        ),
        case("two_audio_languages", two_languages(), PLAYS),
        case("no_audio", make("no_audio.mp4", &[pattern("320x240", "25", "1"), x264()]), PLAYS),
        // Audio that names no channel layout: PCM in AVI (dashcams, compact cameras, MiniDV
        // captures), in Matroska, and mono PCM in a MOV without a `chan` atom.
        case("dashcam_avi_mjpeg_pcm_mono", dashcam_avi(1), PLAYS),
        case("camera_avi_mjpeg_pcm_stereo", dashcam_avi(2), PLAYS),
        case(
            "pcm_mono_mkv",
            make(
                "pcm_mono.mkv",
                &[
                    pattern("320x240", "25", "2"),
                    tone("2"),
                    x264(),
                    strs(&["-c:a", "pcm_s16le", "-ac", "1"]),
                ],
            ),
            PLAYS,
        ),
        case(
            "mono_pcm_mov_without_chan",
            cached(
                "mono_pcm_no_chan.mov",
                &["-i", dashcam_avi(1).to_str().expect("utf-8"), "-c", "copy"],
            ),
            PLAYS,
        ),
        // Sparse variable frame rates: frames only when something changes, and a pause.
        case("screen_recording_sparse_vfr", sparse_screen_recording(), PLAYS),
        case("recording_with_a_pause", recording_with_pause(), PLAYS),
        // A browser's MediaRecorder: WebM written as a stream, without Duration or cues.
        case("browser_mediarecorder_webm", browser_recording(), PLAYS),
        // Sound before the first picture.
        case("picture_starts_after_the_sound", late_picture(), PLAYS),
        // Subtitled films: SRT and ASS in Matroska, timed text in MP4.
        case("subtitled_srt_ass_mkv", subtitled(), PLAYS),
        case("subtitled_mov_text_mp4", subtitled_mp4(), PLAYS),
        case("bluray_picture_subtitles", bluray_pgs(), PLAYS),
        // A fansub release: subtitles and a couple dozen attached fonts.
        case("fansub_mkv_with_fonts", fansub_mkv(), PLAYS),
        // HDR phone and camera videos: HDR10 (PQ, with mastering metadata) and HLG (what an
        // iPhone records by default), both 10-bit HEVC.
        case("hdr10_pq_hevc_mp4", hdr(Transfer::Pq), PLAYS),
        case("hlg_hevc_mov_iphone", hdr(Transfer::Hlg), PLAYS),
        // An editor's reference movie: the audio track's data is in another file.
        case("external_audio_reference", external_audio(), PLAYS),
    ]
}

/// An MP4 whose audio track's data reference is a `QuickTime` alias to another file (as an
/// editor's reference movie has): FFmpeg skips such a track, so it has no samples here.
/// Made from a normal MP4 (index at the end) by swapping the audio track's `url ` data
/// reference for an `alis` one and growing the boxes around it.
pub fn external_audio() -> PathBuf {
    let base = make(
        "external_audio_base.mp4",
        &[pattern("320x240", "25", "2"), tone("2"), x264(), strs(&["-c:a", "aac"])],
    );
    cached_bytes("external_audio.mp4", || {
        let bytes = std::fs::read(&base).expect("read the base clip");
        with_alias_audio(&bytes).expect("the base clip has a moov at the end with an audio trak")
    })
}

/// Big-endian box size at `at`.
fn size_at(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// Offsets of the child boxes of the box at `at` (with `skip` bytes of fields before them).
fn children(bytes: &[u8], at: usize, skip: usize) -> Vec<(usize, [u8; 4])> {
    let end = at + size_at(bytes, at);
    let mut offset = at + 8 + skip;
    let mut found = Vec::new();
    while offset + 8 <= end {
        let size = size_at(bytes, offset);
        if size < 8 {
            break;
        }
        found.push((offset, bytes[offset + 4..offset + 8].try_into().expect("4 bytes")));
        offset += size;
    }
    found
}

fn with_alias_audio(bytes: &[u8]) -> Option<Vec<u8>> {
    let top = {
        let mut offset = 0;
        let mut found = Vec::new();
        while offset + 8 <= bytes.len() {
            found.push((offset, bytes[offset + 4..offset + 8].to_vec()));
            offset += size_at(bytes, offset).max(8);
        }
        found
    };
    let moov = top.iter().find(|(_, k)| k == b"moov")?.0;
    // The index must be last, so growing it moves no sample data.
    if moov + size_at(bytes, moov) != bytes.len() {
        return None;
    }
    let find = |parent: usize, kind: &[u8; 4], skip: usize| {
        children(bytes, parent, skip).into_iter().find(|(_, k)| k == kind).map(|(o, _)| o)
    };
    let trak =
        children(bytes, moov, 0).into_iter().filter(|(_, k)| k == b"trak").find(|(t, _)| {
            find(*t, b"mdia", 0)
                .and_then(|m| find(m, b"hdlr", 0))
                .is_some_and(|h| &bytes[h + 16..h + 20] == b"soun")
        })?;
    let trak = trak.0;
    let mdia = find(trak, b"mdia", 0)?;
    let minf = find(mdia, b"minf", 0)?;
    let dinf = find(minf, b"dinf", 0)?;
    let dref = find(dinf, b"dref", 0)?;
    let entry = dref + 16;
    let old_entry = size_at(bytes, entry);
    // A Mac alias record as FFmpeg's reader expects it: fixed fields (volume, file name,
    // levels), then tagged records; tag 2 is the absolute path.
    let mut alias = vec![0u8; 150];
    alias[10] = 5;
    alias[11..16].copy_from_slice(b"Media");
    alias[50] = 9;
    alias[51..60].copy_from_slice(b"audio.aif");
    let path = b"/Volumes/Media/audio.aif";
    alias.extend_from_slice(&2u16.to_be_bytes());
    alias.extend_from_slice(&(path.len() as u16).to_be_bytes());
    alias.extend_from_slice(path);
    if path.len() % 2 == 1 {
        alias.push(0);
    }
    alias.extend_from_slice(&0xffffu16.to_be_bytes());
    alias.extend_from_slice(&0u16.to_be_bytes());
    let mut new_entry = ((alias.len() + 12) as u32).to_be_bytes().to_vec();
    new_entry.extend_from_slice(b"alis");
    new_entry.extend_from_slice(&[0, 0, 0, 0]); // version 0, flags 0: not self-contained
    new_entry.extend_from_slice(&alias);
    let grow = new_entry.len() - old_entry;
    let mut out = bytes[..entry].to_vec();
    out.extend_from_slice(&new_entry);
    out.extend_from_slice(&bytes[entry + old_entry..]);
    for parent in [moov, trak, mdia, minf, dinf, dref] {
        let size = size_at(&out, parent) + grow;
        out[parent..parent + 4].copy_from_slice(&(size as u32).to_be_bytes());
    }
    Some(out)
}

/// Whether the first picture of `path` shows the white marker block top-left, as decoded by
/// the `ffmpeg` CLI (which applies any display matrix, as players do): mean brightness of a
/// 3×3 grid, the top-left cell bright, the others dark.
pub fn marker_top_left(path: &Path) -> Result<(), String> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-vf", "scale=3:3:flags=area", "-f", "rawvideo"])
        .args(["-pix_fmt", "gray", "-"])
        .output()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    let cells = output.stdout;
    if cells.len() != 9 {
        return Err(format!("{}: {}", path.display(), String::from_utf8_lossy(&output.stderr)));
    }
    let others = cells[1..].iter().copied().max().unwrap_or(255);
    if cells[0] > 150 && others < 110 {
        Ok(())
    } else {
        Err(format!("{}: marker not top-left, grid {cells:?}", path.display()))
    }
}

/// The usual portrait phone file: landscape pictures with a display rotation of -90° (what
/// `ffprobe` reports for an iPhone held upright); displayed 180×320 with the marker top-left.
pub fn portrait_phone() -> PathBuf {
    rotated("rot270_h264.mp4", "180x320", "transpose=cclock", 270, false)
}

/// A 16×16 clip: below the minimum size.
pub fn tiny() -> PathBuf {
    make("tiny_16.mp4", &[pattern("16x16", "25", "1"), x264()])
}

/// An AVI as dashcams and compact cameras write it: MJPEG with PCM audio of `channels` whose
/// header (a plain WAVEFORMATEX) names no channel layout.
pub fn dashcam_avi(channels: u8) -> PathBuf {
    let channels = channels.to_string();
    make(
        &format!("dashcam_pcm_{channels}ch.avi"),
        &[
            pattern("320x240", "25", "2"),
            tone("2"),
            strs(&["-c:v", "mjpeg", "-c:a", "pcm_s16le", "-ac", &channels]),
        ],
    )
}

/// A screen recording that only emits frames when something changes: a 60 fps base rate (every
/// timestamp on a 1/60 s tick) but about 9 frames a second on average — short bursts of
/// motion, then nothing, for 6 s. Audio throughout.
pub fn sparse_screen_recording() -> PathBuf {
    make(
        "sparse_vfr.mp4",
        &[
            pattern("320x240", "60", "6"),
            tone("6"),
            strs(&["-vf", "select='lt(mod(t,2),0.3)'", "-fps_mode", "vfr"]),
            x264(),
            strs(&["-c:a", "aac"]),
        ],
    )
}

/// A 30 fps recording paused for 10 s: frames from 0 to 3 s and from 13 to 16 s, the
/// timestamps keeping the gap (16 s long); audio throughout.
pub fn recording_with_pause() -> PathBuf {
    make(
        "paused_vfr.mp4",
        &[
            pattern("320x240", "30", "16"),
            tone("16"),
            strs(&["-vf", "select='not(between(t,3,13))'", "-fps_mode", "vfr"]),
            x264(),
            strs(&["-c:a", "aac"]),
        ],
    )
}

/// A recording as Chrome's and Firefox's `MediaRecorder` produce it: VP8 + Opus `WebM` written
/// as a stream (the muxer cannot seek back), so it has no Duration element and no cues.
pub fn browser_recording() -> PathBuf {
    cached_bytes("mediarecorder.webm", || {
        let output = Command::new("ffmpeg")
            .args(["-v", "error"])
            .args(pattern("320x240", "25", "3"))
            .args(tone("3"))
            .args(["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k"])
            .args(["-c:a", "libopus", "-f", "webm", "pipe:1"])
            .output()
            .expect("run ffmpeg (scripts/setup.sh installs it)");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    })
}

/// A fansub-style Matroska file: H.264, AAC, an SRT track and 24 attached fonts (27 streams).
pub fn fansub_mkv() -> PathBuf {
    let srt = cached_bytes("fansub.srt", || b"1\n00:00:00,200 --> 00:00:01,500\nhello\n".to_vec());
    let font = cached_bytes("font.ttf", || {
        // Only the container's mimetype makes it a font; nothing decodes it.
        let mut bytes = b"\x00\x01\x00\x00".to_vec();
        bytes.resize(2048, 0);
        bytes
    });
    let font = font.to_str().expect("utf-8").to_owned();
    let mut parts =
        vec![pattern("320x240", "25", "2"), tone("2"), strs(&["-i", srt.to_str().expect("utf-8")])];
    for _ in 0..24 {
        parts.push(strs(&["-attach", &font]));
    }
    parts.push(x264());
    parts.push(strs(&[
        "-c:a",
        "aac",
        "-c:s",
        "srt",
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-metadata:s:t",
        "mimetype=application/x-truetype-font",
    ]));
    make("fansub_fonts.mkv", &parts)
}

/// A film with two audio languages: English (flagged default, but the *second* track) and
/// French with a title a hostile muxer wrote (a quote, a line break and a playlist tag), in
/// Matroska; each track a different pitch (440 Hz English, 880 Hz French) so a player's
/// choice can be heard.
pub fn two_languages() -> PathBuf {
    make(
        "two_languages.mkv",
        &[
            pattern("320x240", "25", "2"),
            tone_at("880", "2"),
            tone_at("440", "2"),
            x264(),
            strs(&[
                "-c:a",
                "aac",
                "-map",
                "0",
                "-map",
                "1",
                "-map",
                "2",
                "-metadata:s:a:0",
                "language=fre",
                "-metadata:s:a:0",
                "title=Fran\u{e7}ais \"VF\"\n#EXT-X-ENDLIST",
                "-metadata:s:a:1",
                "language=eng",
                "-disposition:a:0",
                "0",
                "-disposition:a:1",
                "default",
            ]),
        ],
    )
}

/// The English SRT of [`subtitled`]: a cue with markup characters, one across the 1 s segment
/// boundary, and one whose text tries to end the cue and open a playlist line.
pub const SUBTITLED_SRT: &str = "1\n00:00:00,500 --> 00:00:00,900\nHello <b>&</b> world\n\n\
2\n00:00:00,950 --> 00:00:02,200\nacross\n\n\
3\n00:00:02,300 --> 00:00:02,800\nx\n\u{a0}\n00:00:09,000 --> 00:00:10,000\n#EXT-X-ENDLIST\n";

/// A subtitled film in Matroska (3 s): English SRT flagged default, French ASS flagged forced
/// with styling overrides and an ASS line break.
pub fn subtitled() -> PathBuf {
    let srt = cached_bytes("subtitled_en.srt", || SUBTITLED_SRT.as_bytes().to_vec());
    let ass = cached_bytes("subtitled_fr.ass", || {
        "[Script Info]\nScriptType: v4.00+\nPlayResX: 320\nPlayResY: 240\n\n[V4+ Styles]\n\
         Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, \
         BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, \
         BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n\
         Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,\
         0,0,1,1,0,2,10,10,10,1\n\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, \
         MarginR, MarginV, Effect, Text\n\
         Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,{\\i1}Bonjour{\\i0}\\Nle monde\n"
            .as_bytes()
            .to_vec()
    });
    make(
        "subtitled.mkv",
        &[
            pattern("320x240", "25", "3"),
            tone("3"),
            strs(&["-i", srt.to_str().expect("utf-8"), "-i", ass.to_str().expect("utf-8")]),
            x264(),
            strs(&[
                "-c:a",
                "aac",
                "-c:s:0",
                "srt",
                "-c:s:1",
                "ass",
                "-map",
                "0",
                "-map",
                "1",
                "-map",
                "2",
                "-map",
                "3",
                "-metadata:s:s:0",
                "language=eng",
                "-metadata:s:s:1",
                "language=fre",
                "-disposition:s:0",
                "default",
                "-disposition:s:1",
                "forced",
            ]),
        ],
    )
}

/// A film as a streaming service gets it (4 s, Matroska): English audio (440 Hz, default) and
/// French audio (880 Hz), English SRT and French ASS subtitles ([`subtitled`]'s).
pub fn film() -> PathBuf {
    let subtitled = subtitled();
    let subtitled = subtitled.to_str().expect("utf-8");
    make(
        "film.mkv",
        &[
            pattern("320x240", "25", "4"),
            tone_at("440", "4"),
            tone_at("880", "4"),
            strs(&["-i", subtitled]),
            x264(),
            strs(&[
                "-c:a",
                "aac",
                "-c:s",
                "copy",
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-map",
                "2:a",
                "-map",
                "3:s",
                "-metadata:s:a:0",
                "language=eng",
                "-metadata:s:a:1",
                "language=fre",
                "-disposition:a:0",
                "default",
                "-disposition:a:1",
                "0",
            ]),
        ],
    )
}

/// A Blu-ray rip: picture subtitles (PGS, a `.sup` stream of two display sets) beside the
/// video and audio, in Matroska.
pub fn bluray_pgs() -> PathBuf {
    let sup = cached_bytes("two_display_sets.sup", || {
        // Segments: "PG", PTS and DTS (90 kHz), type, size, payload. A presentation
        // composition (0x16: 320x240, frame rate code, composition number, state, palette
        // update flag and id, no objects) then the end of the display set (0x80), at 0.5 s
        // and at 1.5 s.
        let segment = |pts: u32, kind: u8, payload: &[u8]| {
            let mut bytes = b"PG".to_vec();
            bytes.extend_from_slice(&pts.to_be_bytes());
            bytes.extend_from_slice(&0u32.to_be_bytes());
            bytes.push(kind);
            bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            bytes.extend_from_slice(payload);
            bytes
        };
        let composition = |number: u16, state: u8| {
            let mut payload = Vec::new();
            payload.extend_from_slice(&320u16.to_be_bytes());
            payload.extend_from_slice(&240u16.to_be_bytes());
            payload.push(0x10);
            payload.extend_from_slice(&number.to_be_bytes());
            payload.extend_from_slice(&[state, 0, 0, 0]);
            payload
        };
        [
            segment(45_000, 0x16, &composition(0, 0x80)),
            segment(45_000, 0x80, &[]),
            segment(135_000, 0x16, &composition(1, 0)),
            segment(135_000, 0x80, &[]),
        ]
        .concat()
    });
    let video = quiet_recording();
    cached(
        "bluray_pgs.mkv",
        &[
            "-i",
            video.to_str().expect("utf-8"),
            "-i",
            sup.to_str().expect("utf-8"),
            "-map",
            "0",
            "-map",
            "1",
            "-c",
            "copy",
        ],
    )
}

/// [`subtitled`]'s English track as MP4 timed text (`mov_text`), as editors export it.
pub fn subtitled_mp4() -> PathBuf {
    let source = subtitled();
    cached(
        "subtitled_mov_text.mp4",
        &[
            "-i",
            source.to_str().expect("utf-8"),
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-map",
            "0:s:0",
            "-c:v",
            "copy",
            "-c:a",
            "copy",
            "-c:s",
            "mov_text",
        ],
    )
}

/// A camera that starts recording sound first: a 440 Hz tone from 0 s, the picture (2 s of
/// test pattern) from 1 s — the video track's timestamps start at 1 s.
pub fn late_picture() -> PathBuf {
    make(
        "late_picture.mp4",
        &[
            strs(&["-itsoffset", "1"]),
            pattern("320x240", "25", "2"),
            tone("3"),
            x264(),
            strs(&["-fps_mode", "passthrough", "-c:a", "aac"]),
        ],
    )
}

/// A quiet recording (a phone far from its subject): a 2 s test pattern with a 440 Hz tone
/// 30 dB below the usual test tone (about -48 LUFS).
pub fn quiet_recording() -> PathBuf {
    make(
        "quiet.mp4",
        &[
            pattern("320x240", "25", "2"),
            tone("2"),
            x264(),
            strs(&["-af", "volume=-30dB", "-c:a", "aac"]),
        ],
    )
}

/// An HDR transfer function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// SMPTE ST 2084 (HDR10).
    Pq,
    /// ARIB STD-B67 hybrid log-gamma.
    Hlg,
}

/// The SDR picture the HDR files are made from, at their size (`-i` arguments): a colourful
/// test pattern.
pub fn hdr_original() -> Vec<String> {
    pattern("640x360", "25", "2")
}

/// The HDR mastering display of [`hdr`]'s PQ file: P3 primaries, D65, 1000 to 0.0001 cd/m²
/// (x265's units), and its content light levels.
pub const HDR10_MASTER_DISPLAY: &str =
    "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)";
pub const HDR10_MAX_CLL: (u32, u32) = (1000, 400);

/// [`hdr_original`] as an HDR phone or camera stores it: converted (by zimg, in linear light,
/// SDR white at 100 cd/m²) to BT.2020 primaries and the `transfer`, 10-bit HEVC tagged
/// `hvc1`, with AAC audio. PQ comes as an HDR10 MP4 with mastering display and content light
/// SEI; HLG as a MOV, as an iPhone records it.
pub fn hdr(transfer: Transfer) -> PathBuf {
    let (name, trc, x265, extension) = match transfer {
        Transfer::Pq => (
            "hdr10_pq",
            "smpte2084",
            format!(
                "log-level=error:hdr10=1:master-display={HDR10_MASTER_DISPLAY}:max-cll={},{}",
                HDR10_MAX_CLL.0, HDR10_MAX_CLL.1
            ),
            "mp4",
        ),
        Transfer::Hlg => ("hlg", "arib-std-b67", "log-level=error".to_owned(), "mov"),
    };
    make(
        &format!("{name}.{extension}"),
        &[
            hdr_original(),
            tone("2"),
            strs(&[
                "-vf",
                &format!(
                    "zscale=tin=709:pin=709:min=709:rin=limited:t={trc}:p=2020:m=2020_ncl:\
                     r=limited:npl=100,format=yuv420p10le"
                ),
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-tag:v",
                "hvc1",
                "-x265-params",
                &x265,
                "-color_primaries",
                "bt2020",
                "-color_trc",
                trc,
                "-colorspace",
                "bt2020nc",
                "-c:a",
                "aac",
            ]),
        ],
    )
}

/// HEVC video with Opus audio in Matroska (what the `default` preset copies as it is).
pub fn hevc_opus_mkv() -> PathBuf {
    make(
        "hevc_opus.mkv",
        &[
            pattern("320x240", "25", "1"),
            tone("1"),
            strs(&["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"]),
            strs(&["-c:a", "libopus"]),
        ],
    )
}
