//! The web console in a real browser: Debian's headless chromium, driven over WebDriver,
//! against the stack `tcoder up` starts — the key typed in, a clip picked in the file input,
//! the job followed to `completed` in the page, the HLS result played by hls.js.

use std::time::Duration;

use testkit::browser::{Browser, artifact_path};
use testkit::media::ClipSpec;

use crate::up::{
    MediaServer, SPLIT_AND_SMALL_PARTS, curl, large_clip, read_summary, spawn_up,
    stop_after_the_first_part,
};

/// The page's job status once it is terminal.
const TERMINAL: &str = "const s = document.getElementById('job-status').dataset.status; \
                        return ['completed', 'failed', 'canceled'].includes(s) ? s : null";

/// A browser on the console at `api`, `key` entered and accepted.
fn signed_in(api: &str, key: &str) -> Browser {
    let browser = Browser::start();
    browser.open(&format!("{api}/"));
    browser.type_into("#api-key", key);
    browser.click("#key-form button[type=submit]");
    browser.wait_for(
        Duration::from_secs(15),
        "return document.getElementById('key-state').textContent === 'key accepted'",
    );
    browser
}

#[test]
fn the_console_uploads_follows_and_plays_a_video_and_shows_a_failure() {
    let _stack = crate::one_stack_at_a_time();
    let data = tempfile::tempdir().unwrap();
    // Titles over 4 s are split into 4 s chunks: the one played below is. A media server on
    // this host to import from.
    let media = MediaServer::start();
    let (mut up, lines) = spawn_up(data.path(), &media.allowed_with(&SPLIT_AND_SMALL_PARTS));
    let summary = read_summary(&lines);
    let api = summary["api"].0.clone();
    let key = std::fs::read_to_string(data.path().join("api-key")).unwrap().trim().to_owned();

    // Served with a policy that allows only its own scripts, and the store for media.
    let (status, head, page) = curl(&format!("{api}/"), &[]);
    assert_eq!(status, 200);
    let policy = head.lines().find(|l| l.starts_with("content-security-policy:")).unwrap();
    assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe-inline"), "{policy}");
    assert!(policy.contains(&summary["object store"].0), "{policy}");
    assert!(!String::from_utf8_lossy(&page).contains("<script>"), "no inline script");

    let browser = signed_in(&api, &key);

    // Two rungs, so the player has a ladder to choose from; 8 s with sound, so the title is
    // encoded in two chunks and its audio apart, and stitched.
    let clip = testkit::media::clip(&ClipSpec {
        width: 640,
        height: 360,
        duration_ms: 8000,
        audio: true,
        ..ClipSpec::default()
    });
    browser.eval("document.getElementById('qualities').value = '144p,360p'; return true;");
    browser.type_into("#file", clip.to_str().unwrap());
    let status = browser.wait_for(Duration::from_secs(120), TERMINAL);
    assert_eq!(status, "completed", "{}", browser.eval("return document.body.innerText"));
    let timeline = browser.eval("return document.getElementById('timeline').innerText");
    for kind in ["queued", "started", "progress", "completed"] {
        assert!(timeline.as_str().unwrap().contains(kind), "{timeline}");
    }
    let id = browser.eval("return document.getElementById('job-id').textContent");
    // The list follows by itself (it was read at sign-in, before the job existed): the row
    // names the file, its duration and shows its poster once the job completed.
    let name = clip.file_name().unwrap().to_str().unwrap();
    let listed = browser.wait_for(
        Duration::from_secs(15),
        &format!(
            "const r = document.querySelector('#job-list tr[data-job={id}]'); \
             if (!r || r.dataset.status !== 'completed') return null; \
             const img = r.querySelector('img.thumb'); \
             return img && img.complete && img.naturalWidth > 0 ? r.innerText : null"
        ),
    );
    let listed = listed.as_str().unwrap();
    assert!(listed.contains(name) && listed.contains("0:08"), "{listed}");

    // hls.js loads the ladder (one level per rendition) and the title's audio rendition, and
    // plays across the chunks' seam at 4 s without a fatal error, decoding sound.
    let levels = browser.wait_for(Duration::from_secs(30), "return window.tcoder.player.levels");
    assert_eq!(levels, 2);
    assert_eq!(browser.eval("return window.tcoder.player.audioTracks"), 1);
    browser.eval(
        "const v = document.getElementById('player'); v.muted = true; v.play(); return true;",
    );
    browser.wait_for(
        Duration::from_secs(30),
        "const v = document.getElementById('player'); \
         return window.tcoder.player.fatal || (v.currentTime > 5 ? v.currentTime : null)",
    );
    assert_eq!(browser.eval("return window.tcoder.player.fatal"), serde_json::Value::Null);
    let audio =
        browser.eval("return document.getElementById('player').webkitAudioDecodedByteCount");
    assert!(audio.as_u64().unwrap_or(0) > 0, "no sound decoded: {audio}");
    let rows = browser.eval("return document.querySelectorAll('#renditions tbody tr').length");
    assert_eq!(rows, 2);
    // Each rendition's measured quality and the setting the per-title probe chose.
    let quality = browser.eval(
        "return [...document.querySelectorAll('#renditions tbody tr')]\
         .map((r) => r.cells[4].textContent)",
    );
    for cell in quality.as_array().unwrap() {
        let text = cell.as_str().unwrap();
        assert!(text.starts_with("VMAF ") && text.contains("· CRF "), "{text}");
    }
    browser.eval("document.getElementById('job').scrollIntoView(); return true;");
    browser.screenshot(&artifact_path("console-completed.png"));

    // A file that is not a video: the job fails and the page says why, with the code.
    browser.type_into("#file", testkit::corpus::text().to_str().unwrap());
    let other_job = format!(
        "if (document.getElementById('job-id').textContent === {id}) return null; {TERMINAL}"
    );
    let status = browser.wait_for(Duration::from_secs(60), &other_job);
    assert_eq!(status, "failed");
    let code = browser.wait_for(
        Duration::from_secs(10),
        "const c = document.getElementById('job-error-code'); return c && c.textContent",
    );
    assert!(code.as_str().unwrap().starts_with("input."), "{code}");
    browser.eval("document.getElementById('job').scrollIntoView(); return true;");
    browser.screenshot(&artifact_path("console-failed.png"));

    // Deleted from the page (once confirmed): the job leaves the list and the API.
    let failed_id = browser.eval("return document.getElementById('job-id').textContent");
    let failed_id = failed_id.as_str().unwrap().to_owned();
    browser.eval(
        "window.confirm = () => true; document.getElementById('delete').click(); return true;",
    );
    browser.wait_for(
        Duration::from_secs(15),
        &format!(
            "return document.getElementById('job-status').dataset.status === 'deleted' && \
             !document.querySelector('#job-list tr[data-job={failed_id}]')"
        ),
    );
    let (status, _, _) = curl(
        &format!("{api}/v1/jobs/{failed_id}"),
        &["-H", &format!("authorization: Bearer {key}")],
    );
    assert_eq!(status, 404);

    // A large file whose upload stopped after its first part: opened in the console and chosen
    // again, its job gets the parts it lacks (no new job) and completes.
    let work = tempfile::tempdir().unwrap();
    let large = large_clip(work.path());
    let (large_id, parts) = stop_after_the_first_part(&api, &key, &large);
    browser.eval(&format!("location.hash = '#/jobs/{large_id}'; return true;"));
    browser.wait_for(
        Duration::from_secs(10),
        &format!(
            "return document.getElementById('job-id').textContent === '{large_id}' && \
             document.getElementById('job-status').dataset.status === 'awaiting_upload'"
        ),
    );
    browser.type_into("#file", large.to_str().unwrap());
    let status = browser.wait_for(
        Duration::from_secs(60),
        &format!(
            "if (document.getElementById('job-id').textContent !== '{large_id}') return null; \
             {TERMINAL}"
        ),
    );
    let said = browser.eval("return document.getElementById('upload-status').textContent");
    assert_eq!(status, "completed", "{said}");
    let resumed = format!("resumed job {large_id}: 1 of {parts} parts already uploaded");
    assert!(said.as_str().unwrap().starts_with(&resumed), "{said}");
    let sent = browser.eval("return window.tcoder.upload");
    assert_eq!(
        (sent["stored"].as_u64(), sent["sent"].as_u64()),
        (Some(1), Some(parts - 1)),
        "{sent}"
    );

    // Imported from a URL typed into the page: the job reports the fetch and completes.
    std::fs::copy(testkit::media::tiny_mp4(), media.dir.path().join("film.mp4")).unwrap();
    browser.eval(&format!(
        "document.getElementById('source-url').value = 'http://{}/film.mp4'; \
         document.querySelector('#import-form button').click(); return true;",
        media.addr
    ));
    let status = browser.wait_for(
        Duration::from_secs(60),
        &format!(
            "const id = document.getElementById('job-id').textContent; \
             if (id === '{large_id}' || id === '{failed_id}') return null; {TERMINAL}"
        ),
    );
    let timeline = browser.eval("return document.getElementById('timeline').innerText");
    assert_eq!(status, "completed", "{timeline}");
    assert!(timeline.as_str().unwrap().contains("importing"), "{timeline}");

    // The key never went into a URL (page, requests, history).
    let urls = browser.eval(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])",
    );
    assert!(!urls.to_string().contains(&key), "{urls}");
    drop(browser);
    let (_, in_time) = up.terminate(Duration::from_secs(30)).unwrap();
    assert!(in_time);
}

/// A film with two audio languages and two caption tracks, played in the console by hls.js in
/// Chromium: the viewer picks the second language (hls.js switches to the French rendition and
/// keeps decoding sound) and turns on English captions (the browser's text track shows the
/// film's cues).
#[test]
fn the_console_plays_a_second_language_and_shows_captions() {
    let _stack = crate::one_stack_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let (mut up, lines) = spawn_up(data.path(), &[]);
    let summary = read_summary(&lines);
    let api = summary["api"].0.clone();
    let key = std::fs::read_to_string(data.path().join("api-key")).unwrap().trim().to_owned();
    let browser = signed_in(&api, &key);
    browser.eval(
        "document.getElementById('preset').value = 'hls'; \
         document.getElementById('qualities').value = '144p,360p'; return true;",
    );
    let film = std::fs::canonicalize(testkit::everyday::film()).unwrap();
    browser.type_into("#file", film.to_str().unwrap());
    let status = browser.wait_for(Duration::from_secs(120), TERMINAL);
    assert_eq!(status, "completed", "{}", browser.eval("return document.body.innerText"));
    browser.wait_for(
        Duration::from_secs(30),
        "const p = window.tcoder.player; return p.audioTracks === 2 && p.subtitleTracks === 2",
    );
    let menu = browser.eval(
        "return [...document.querySelectorAll('#audio-track option, #subtitle-track option')]\
         .map(o => o.textContent)",
    );
    assert_eq!(
        menu,
        serde_json::json!(["English (en)", "French (fr)", "off", "English (en)", "French (fr)"])
    );
    browser.eval(
        "const a = document.getElementById('audio-track'); a.value = '1'; \
         a.dispatchEvent(new Event('change')); \
         const s = document.getElementById('subtitle-track'); s.value = '0'; \
         s.dispatchEvent(new Event('change')); return true;",
    );
    browser.wait_for(
        Duration::from_secs(30),
        "return window.tcoder.player.fatal || window.tcoder.player.audioTrack === 1",
    );
    assert_eq!(browser.eval("return window.tcoder.player.fatal"), serde_json::Value::Null);
    // Played once the French sound is buffered with the picture (what the media element
    // reports as buffered is what both tracks hold): the film is 4 s, and playback started
    // at the switch could reach its end before the new language's only segment arrived.
    browser.wait_for(
        Duration::from_secs(30),
        "const v = document.getElementById('player'); \
         return window.tcoder.player.fatal || \
           (v.buffered.length > 0 && v.buffered.end(0) > 3 ? v.buffered.end(0) : null)",
    );
    browser.eval(
        "const v = document.getElementById('player'); v.muted = true; v.play(); return true;",
    );
    // What a viewer sees: the English text track showing, with the film's cues in it.
    let cues = browser.wait_for(
        Duration::from_secs(30),
        "const t = [...document.getElementById('player').textTracks]\
           .find(t => t.mode === 'showing' && t.cues && t.cues.length > 0); \
         return t ? [t.label, [...t.cues].map(c => c.getCueAsHTML().textContent).join('|')] : null",
    );
    assert_eq!(cues[0], "English", "{cues}");
    assert!(cues[1].as_str().unwrap().contains("Hello & world"), "{cues}");
    // It plays, in French: sound is decoded.
    browser.wait_for(
        Duration::from_secs(30),
        "const v = document.getElementById('player'); \
         return window.tcoder.player.fatal || v.ended || \
           (v.currentTime > 3 && v.webkitAudioDecodedByteCount > 0 ? v.currentTime : null)",
    );
    assert_eq!(browser.eval("return window.tcoder.player.fatal"), serde_json::Value::Null);
    let audio =
        browser.eval("return document.getElementById('player').webkitAudioDecodedByteCount");
    assert!(audio.as_u64().unwrap_or(0) > 0, "no sound decoded: {audio}");
    browser.eval("document.getElementById('player-box').scrollIntoView(); return true;");
    browser.screenshot(&artifact_path("console-languages.png"));
    drop(browser);
    let (_, in_time) = up.terminate(Duration::from_secs(30)).unwrap();
    assert!(in_time);
}

/// Playable in seconds: a 4-minute title plays in the console (hls.js in Chromium) from the
/// job's stable URL while it still encodes — started before the job completed, across the
/// first chunks' seams — and plays on as the job completes, the growing playlist turning into
/// the finished one under the player. Every version of the playlist a player could fetch keeps
/// the one before it (Apple's rules for a growing playlist: the same target duration and
/// media sequence, segments only added, never removed or changed).
#[test]
fn a_long_title_plays_in_the_console_while_it_still_encodes() {
    let _stack = crate::one_stack_at_a_time();
    let data = tempfile::tempdir().unwrap();
    // Chunks of 8 s after the first (4 s): seams at 4 s and 12 s.
    let (mut up, lines) = spawn_up(data.path(), &[("TCODER__WORKER__CHUNK_DURATION", "8s")]);
    let summary = read_summary(&lines);
    let api = summary["api"].0.clone();
    let key = std::fs::read_to_string(data.path().join("api-key")).unwrap().trim().to_owned();
    let clip = testkit::media::clip(&ClipSpec {
        width: 640,
        height: 360,
        duration_ms: 240_000,
        audio: true,
        ..ClipSpec::default()
    });
    let browser = signed_in(&api, &key);
    browser.eval("document.getElementById('qualities').value = '144p,360p'; return true;");
    browser.type_into("#file", clip.to_str().unwrap());

    // The player starts once the job is playable (its `playable` event), from the stable URL.
    browser.wait_for(
        Duration::from_secs(120),
        "return window.tcoder.player.fatal || window.tcoder.player.levels || null",
    );
    assert_eq!(browser.eval("return window.tcoder.player.fatal"), serde_json::Value::Null);
    let id = browser.eval("return document.getElementById('job-id').textContent");
    let id = id.as_str().unwrap().to_owned();
    browser.eval(
        "const v = document.getElementById('player'); v.muted = true; v.play(); return true;",
    );
    let bearer = format!("Authorization: Bearer {key}");
    let job = |id: &str| {
        let (status, _, body) = curl(&format!("{api}/v1/jobs/{id}"), &["-H", &bearer]);
        assert_eq!(status, 200);
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let playlist_url = format!("{api}/v1/jobs/{id}/hls/360p/index.m3u8");
    let mut versions: Vec<String> = Vec::new();
    let fetch_playlist = |versions: &mut Vec<String>| {
        let (status, head, body) = curl(&playlist_url, &["-H", &bearer]);
        assert_eq!(status, 200, "{head}");
        versions.push(String::from_utf8(body).unwrap());
    };
    fetch_playlist(&mut versions);
    // Playing, before the job completed.
    browser.wait_for(
        Duration::from_secs(60),
        "const v = document.getElementById('player'); \
         return window.tcoder.player.fatal || (v.currentTime > 0.5 ? v.currentTime : null)",
    );
    let started_at = std::time::SystemTime::now();
    let at_start = job(&id);
    assert_eq!(at_start["status"], "running", "{at_start}");
    assert!(at_start["playable_at"].is_string(), "{at_start}");
    assert_eq!(at_start["playback_url"], format!("/v1/jobs/{id}/hls/master.m3u8"));
    assert_eq!(browser.eval("return window.tcoder.player.live"), true);
    // Across the seams at 4 s and 12 s, the playlist fetched now and then as a player would.
    for past in [5, 13] {
        browser.wait_for(
            Duration::from_secs(60),
            &format!(
                "const v = document.getElementById('player'); \
                 return window.tcoder.player.fatal || (v.currentTime > {past} ? v.currentTime : null)"
            ),
        );
        fetch_playlist(&mut versions);
    }
    assert_eq!(browser.eval("return window.tcoder.player.fatal"), serde_json::Value::Null);
    let audio =
        browser.eval("return document.getElementById('player').webkitAudioDecodedByteCount");
    assert!(audio.as_u64().unwrap_or(0) > 0, "no sound decoded: {audio}");
    browser.eval("document.getElementById('player-box').scrollIntoView(); return true;");
    browser.screenshot(&artifact_path("console-progressive.png"));

    // The job completes under the playing player, which reloads the playlist, finds it
    // finished, and plays on.
    let status = browser.wait_for(Duration::from_secs(600), TERMINAL);
    assert_eq!(status, "completed", "{}", browser.eval("return document.body.innerText"));
    fetch_playlist(&mut versions);
    let done = job(&id);
    let completed_at = humantime::parse_rfc3339(done["completed_at"].as_str().unwrap()).unwrap();
    assert!(started_at < completed_at, "playback started after the job completed");
    let playing_at = browser.eval("return document.getElementById('player').currentTime");
    browser.wait_for(
        Duration::from_secs(60),
        "return window.tcoder.player.fatal || (window.tcoder.player.live === false || null)",
    );
    browser.wait_for(
        Duration::from_secs(30),
        &format!(
            "const v = document.getElementById('player'); \
             return window.tcoder.player.fatal || (v.currentTime > {} + 2 ? v.currentTime : null)",
            playing_at.as_f64().unwrap()
        ),
    );
    assert_eq!(browser.eval("return window.tcoder.player.fatal"), serde_json::Value::Null);
    let duration = browser.eval("return window.tcoder.player.duration").as_f64().unwrap();
    assert!((duration - 240.0).abs() < 0.5, "the finished playlist lasts {duration} s");

    // Every version kept the one before: growing (EVENT) ones the same header, the finished
    // one VOD with its end; each segment listed once.
    let (first_header, _) = testkit::media::playlist_lines(&versions[0]);
    assert!(first_header.contains(&"#EXT-X-PLAYLIST-TYPE:EVENT".to_owned()), "{first_header:?}");
    for pair in versions.windows(2) {
        let ((before_header, before), (after_header, after)) =
            (testkit::media::playlist_lines(&pair[0]), testkit::media::playlist_lines(&pair[1]));
        let tag = |header: &[String], name: &str| {
            header.iter().find(|l| l.starts_with(name)).cloned().unwrap_or_default()
        };
        for name in ["#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-VERSION"] {
            assert_eq!(tag(&before_header, name), tag(&after_header, name), "{name}");
        }
        assert_eq!(after[..before.len()], before[..], "a segment went away or changed");
    }
    let last = versions.last().unwrap();
    assert!(last.contains("#EXT-X-ENDLIST"), "{last}");
    let segments: Vec<&str> = last.lines().filter(|l| l.ends_with(".m4s")).collect();
    let mut unique = segments.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), segments.len(), "a segment listed twice");
    drop(browser);
    let (_, in_time) = up.terminate(Duration::from_secs(30)).unwrap();
    assert!(in_time);
}
