// tcoder's web console: upload a video, follow its job, play the result. Plain JS, no build
// step; talks to the public API with the key kept in this tab's session storage (never in a
// URL). `window.tcoder.player` reports the player's state (levels, audio tracks, fatal error) for tests and
// the browser's devtools.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_SLOT = 'tcoder.apiKey';
  const state = { key: sessionStorage.getItem(KEY_SLOT) || '', cursor: null, follow: null, hls: null, jobId: null };
  window.tcoder = { player: { levels: 0, audioTracks: 0, audioTrack: -1, subtitleTracks: 0, fatal: null, live: null, duration: 0 } };

  // --- API ------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, problem) {
      super(problem && problem.detail ? `${problem.code}: ${problem.detail}` : `HTTP ${status}`);
      this.status = status;
      this.code = problem && problem.code;
    }
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Authorization: `Bearer ${state.key}` }, options.headers || {});
    const response = await fetch(path, Object.assign({}, options, { headers }));
    const text = await response.text();
    const body = text ? JSON.parse(text) : null;
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // --- key ------------------------------------------------------------------------------
  async function checkKey() {
    if (!state.key) {
      $('key-state').textContent = 'enter an API key (tcoder up writes .data/api-key)';
      return false;
    }
    try {
      await api('/v1/jobs?limit=1');
      $('key-state').textContent = 'key accepted';
      return true;
    } catch (e) {
      $('key-state').textContent = `key refused (${e.message})`;
      return false;
    }
  }

  $('key-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    state.key = $('api-key').value.trim();
    sessionStorage.setItem(KEY_SLOT, state.key);
    $('api-key').value = '';
    if (await checkKey()) { loadJobs(true); route(); }
  });
  $('forget-key').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_SLOT);
    state.key = '';
    checkKey();
  });

  // --- upload ---------------------------------------------------------------------------
  function request(file) {
    const body = { preset: $('preset').value, content_length: file.size, filename: file.name };
    const qualities = $('qualities').value;
    body.qualities = qualities === 'auto' ? 'auto' : qualities.split(',');
    return body;
  }

  // PUTs `blob` to a presigned upload; `onProgress` gets the bytes sent so far.
  function put(upload, blob, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(upload.method, upload.url);
      for (const [name, value] of Object.entries(upload.headers)) {
        // The browser sets the length itself (and refuses to be told).
        if (name.toLowerCase() !== 'content-length') xhr.setRequestHeader(name, value);
      }
      xhr.upload.addEventListener('progress', (e) => onProgress(e.loaded));
      xhr.addEventListener('load', () => (xhr.status < 300 ? resolve() : reject(new Error(`the store answered ${xhr.status}`))));
      xhr.addEventListener('error', () => reject(new Error('the upload failed (network or CORS)')));
      xhr.send(blob);
    });
  }

  function showProgress(sent, total) {
    $('upload-progress').value = total ? Math.round((100 * sent) / total) : 0;
  }

  // A multipart upload being sent, by file, kept in this browser: picking the same file again
  // (after a dropped connection, a closed tab) resumes its job instead of making another.
  const UPLOADS_SLOT = 'tcoder.uploads';
  const fileId = (file) => `${file.name}|${file.size}|${file.lastModified}`;
  function rememberedUploads() {
    try { return JSON.parse(localStorage.getItem(UPLOADS_SLOT)) || {}; } catch (e) { return {}; }
  }
  function remember(file, id) {
    const uploads = rememberedUploads();
    if (id) uploads[fileId(file)] = id; else delete uploads[fileId(file)];
    localStorage.setItem(UPLOADS_SLOT, JSON.stringify(uploads));
  }

  const PART_ATTEMPTS = 3;
  const UPLOAD_ROUNDS = 3;

  // Sends the parts `view` lists (the ones the store lacks), each tried PART_ATTEMPTS times;
  // after a round with a failure, asks for fresh URLs of what is still missing. Then completes.
  async function putParts(id, view, file) {
    let stored = view.uploaded.reduce((sum, part) => sum + part.size, 0);
    window.tcoder.upload = { job: id, parts: view.part_count, stored: view.uploaded.length, sent: 0 };
    for (let round = 1; round <= UPLOAD_ROUNDS; round++) {
      let failure = null;
      for (const part of view.parts) {
        const start = (part.part_number - 1) * view.part_size;
        const blob = file.slice(start, start + part.size);
        for (let attempt = 1; attempt <= PART_ATTEMPTS; attempt++) {
          try {
            await put(part.upload, blob, (loaded) => showProgress(stored + loaded, file.size));
            stored += part.size;
            window.tcoder.upload.sent += 1;
            failure = null;
            break;
          } catch (e) {
            failure = e;
          }
        }
      }
      if (!failure) break;
      if (round === UPLOAD_ROUNDS) throw failure;
      view = (await api(`/v1/jobs/${id}/upload`)).multipart_upload;
    }
    await api(view.complete, { method: 'POST' });
  }

  // The job to resume for `file`: the open job when it awaits a source of this size, else
  // the one this browser was uploading the same file to.
  async function resumable(file) {
    const candidates = [];
    if (state.job && state.job.status === 'awaiting_upload' && state.job.content_length === file.size) candidates.push(state.job.id);
    const remembered = rememberedUploads()[fileId(file)];
    if (remembered) candidates.push(remembered);
    for (const id of candidates) {
      try {
        const view = await api(`/v1/jobs/${id}/upload`);
        if (view.multipart_upload) return view;
      } catch (e) {
        // Gone, done or another tenant's: not resumable.
      }
    }
    remember(file, null);
    return null;
  }

  async function upload(file) {
    if (!file) return;
    const status = $('upload-status');
    $('upload-progress').hidden = false;
    $('upload-progress').value = 0;
    let inParts = false;
    try {
      status.textContent = `looking for an upload of ${file.name} to resume…`;
      let created = await resumable(file);
      let note = '';
      if (created) {
        const view = created.multipart_upload;
        note = `resumed job ${created.job.id}: ${view.uploaded.length} of ${view.part_count} parts already uploaded; `;
      } else {
        status.textContent = `creating a job for ${file.name}…`;
        created = await api('/v1/jobs', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(request(file)),
        });
      }
      const id = created.job.id;
      location.hash = `#/jobs/${id}`;
      if (created.multipart_upload) {
        inParts = true;
        remember(file, id);
        status.textContent = `${note}uploading ${file.name} (${formatBytes(file.size)}) in ${created.multipart_upload.part_count} parts…`;
        await putParts(id, created.multipart_upload, file);
        remember(file, null);
      } else {
        status.textContent = `uploading ${file.name} (${formatBytes(file.size)})…`;
        await put(created.upload, file, (loaded) => showProgress(loaded, file.size));
      }
      status.textContent = `${note}uploaded ${file.name}: job ${id}`;
      if (state.jobId === id && $('job-status').dataset.status === 'awaiting_upload') setStatus('uploaded');
      refreshJobs();
    } catch (e) {
      const again = inParts ? '; choose the file again to send the parts still missing' : '';
      status.textContent = `upload failed: ${e.message}${again}`;
    }
  }

  // A job whose source ingest fetches from a URL: nothing to upload, its events say how the
  // fetch goes.
  $('import-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const status = $('upload-status');
    const body = request({ size: 0, name: undefined });
    delete body.content_length;
    delete body.filename;
    body.source_url = $('source-url').value.trim();
    try {
      const created = await api('/v1/jobs', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      status.textContent = `importing ${body.source_url}: job ${created.job.id}`;
      $('source-url').value = '';
      location.hash = `#/jobs/${created.job.id}`;
      refreshJobs();
    } catch (e) {
      status.textContent = `import refused: ${e.message}`;
    }
  });

  $('file').addEventListener('change', (e) => upload(e.target.files[0]));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    upload(e.dataTransfer.files[0]);
  });

  // --- job list -------------------------------------------------------------------------
  // The list follows the jobs by itself: every LIST_EVERY ms while the tab is visible it reads
  // again as many jobs as it shows (at most 100), so new jobs appear and statuses, durations
  // and posters fill in without a Refresh.
  const LIST_EVERY = 3000;
  const ENDED = ['completed', 'failed', 'canceled', 'expired'];

  function jobName(job) {
    if (job.filename) return job.filename;
    // A submitted or watched object: its key's last segment.
    if (job.origin.kind !== 'api' && job.source && job.source.key) return job.source.key.split('/').pop();
    return job.source_url ? job.source_url.split('/').pop() || job.source_url : '—';
  }

  function jobRow(job) {
    const result = job.result;
    const poster = result && result.thumbnails
      ? el('img', { src: result.thumbnails.poster, alt: '', class: 'thumb', loading: 'lazy' }) : '';
    const link = el('a', { href: `#/jobs/${job.id}`, title: job.id }, jobName(job));
    const duration = result && result.source ? formatDuration(result.source.duration_secs) : '';
    const origin = job.origin.kind === 'watch' ? `watch:${job.origin.rule}` : job.origin.kind;
    const tr = row([poster, link, job.status, duration, job.preset, origin, job.created_at.slice(0, 19).replace('T', ' ')]);
    tr.dataset.job = job.id;
    tr.dataset.status = job.status;
    return tr;
  }

  async function listPage(cursor, limit) {
    const params = new URLSearchParams({ limit: String(limit) });
    if ($('status-filter').value) params.set('status', $('status-filter').value);
    if (cursor) params.set('cursor', cursor);
    return api(`/v1/jobs?${params}`);
  }

  // Appends the next page (older jobs), or starts over.
  async function loadJobs(fresh) {
    if (!state.key) return;
    if (fresh) { state.cursor = null; $('job-list').tBodies[0].replaceChildren(); }
    try {
      const page = await listPage(state.cursor, 20);
      $('job-list').tBodies[0].append(...page.jobs.map(jobRow));
      state.cursor = page.next_cursor;
      $('more').hidden = !state.cursor;
    } catch (e) {
      $('key-state').textContent = e.message;
    }
  }

  // Reads the jobs shown again (new ones first) and redraws the list.
  async function refreshJobs() {
    if (!state.key || state.listing) return;
    state.listing = true;
    try {
      const shown = $('job-list').tBodies[0].rows.length;
      const page = await listPage(null, Math.min(100, Math.max(20, shown)));
      $('job-list').tBodies[0].replaceChildren(...page.jobs.map(jobRow));
      state.cursor = page.next_cursor;
      $('more').hidden = !state.cursor;
    } catch (e) {
      // The next round tries again.
    } finally {
      state.listing = false;
    }
  }

  setInterval(() => { if (!document.hidden) refreshJobs(); }, LIST_EVERY);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshJobs(); });
  $('status-filter').addEventListener('change', () => loadJobs(true));
  $('more').addEventListener('click', () => loadJobs(false));

  // --- one job --------------------------------------------------------------------------
  function setStatus(status, percent) {
    $('job-status').textContent = status;
    $('job-status').dataset.status = status;
    const running = status === 'running' && typeof percent === 'number';
    $('job-progress').hidden = !running;
    $('job-percent').textContent = running ? `${percent.toFixed(0)} %` : '';
    if (running) $('job-progress').value = percent;
    $('cancel').hidden = ENDED.includes(status) || status === 'deleted';
    $('delete').hidden = status === 'deleted';
  }

  const STATUS_OF = { accepted: null, importing: null, queued: 'queued', started: 'running', progress: 'running', rendition: 'running', playable: 'running', completed: 'completed', failed: 'failed', canceled: 'canceled', expired: 'expired', deleted: 'deleted' };

  function onEvent(event) {
    const detail = event.type === 'progress' ? ` ${Number(event.data.percent).toFixed(0)} %`
      : event.type === 'importing' ? ` ${formatBytes(event.data.bytes)}`
      : event.type === 'rendition' ? ` ${event.data.name}`
      : event.type === 'failed' || event.type === 'expired' ? ` ${event.data.error.code}` : '';
    $('timeline').append(el('li', {}, `${event.at.slice(11, 23)} ${event.type}${detail}`));
    const status = STATUS_OF[event.type];
    if (status) setStatus(status, event.type === 'progress' ? Number(event.data.percent) : undefined);
    // It plays now, while the rest encodes: from the job's stable URL, which keeps playing
    // when the job completes.
    if (event.type === 'playable' && state.jobId === event.job_id) startPlayer(event.data.playback_url, true);
  }

  // Server-sent events through fetch: EventSource cannot send the Authorization header, and
  // the key must not go into a URL.
  // Follows the job's events to its end. A stream that drops (ingest restarting, a proxy's
  // timeout) is reconnected with Last-Event-ID, so each event is shown once.
  const FOLLOW_ATTEMPTS = 20;
  async function follow(id) {
    if (state.follow) state.follow.abort();
    const controller = new AbortController();
    state.follow = controller;
    const seen = new Set();
    let lastId = null;
    let ended = false;
    for (let attempt = 0; attempt < FOLLOW_ATTEMPTS && !ended; attempt++) {
      if (attempt > 0) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** attempt)));
        if (controller.signal.aborted) return;
      }
      try {
        const headers = { Authorization: `Bearer ${state.key}`, Accept: 'text/event-stream' };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const response = await fetch(`/v1/jobs/${id}/events`, { headers, signal: controller.signal });
        if (response.status === 401 || response.status === 404) throw new Error(`events answered ${response.status}`);
        if (!response.ok) continue;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
            if (!data) continue;
            const event = JSON.parse(data);
            if (seen.has(event.id)) continue;
            seen.add(event.id);
            lastId = event.id;
            onEvent(event);
            if (ENDED.includes(event.type)) ended = true;
          }
        }
      } catch (e) {
        if (e.name === 'AbortError') return;
        if (e.message.startsWith('events answered')) {
          $('player-note').textContent = `event stream: ${e.message}`;
          break;
        }
        // A network error: try again.
      }
    }
    if (state.jobId === id) showJob(id, false);
  }

  async function showJob(id, andFollow) {
    let job;
    try {
      job = await api(`/v1/jobs/${id}`);
    } catch (e) {
      $('job-error').hidden = false;
      $('job-error').textContent = e.message;
      return;
    }
    if (state.jobId === id) state.job = job;
    setStatus(job.status, job.progress ? job.progress.percent : undefined);
    if (job.error) {
      $('job-error').hidden = false;
      $('job-error').replaceChildren(el('code', { id: 'job-error-code' }, job.error.code), ` — ${job.error.message}`);
    }
    if (job.result) showResult(job.result);
    else if (job.playable_at && job.playback_url && job.status === 'running') startPlayer(job.playback_url, true);
    if (andFollow) follow(id);
  }

  function openJob(id) {
    state.jobId = id;
    state.job = null;
    $('job').hidden = false;
    $('job-id').textContent = id;
    $('job-error').hidden = true;
    $('job-error').replaceChildren();
    $('timeline').replaceChildren();
    $('player-box').hidden = true;
    $('renditions').tBodies[0].replaceChildren();
    for (const list of ['source', 'cost']) $(list).replaceChildren();
    $('poster').hidden = true;
    resetPlayer();
    setStatus('…');
    showJob(id, true);
  }

  // Deletes the open job — outputs, uploaded source, record — once the viewer confirms.
  $('delete').addEventListener('click', async () => {
    const id = state.jobId;
    if (!id || !window.confirm(`Delete job ${id}, its outputs and its uploaded source?`)) return;
    try {
      await api(`/v1/jobs/${id}`, { method: 'DELETE' });
    } catch (e) {
      $('player-note').textContent = e.message;
      return;
    }
    if (state.follow) state.follow.abort();
    resetPlayer();
    $('player-box').hidden = true;
    setStatus('deleted');
    $('upload-status').textContent = `deleted job ${id}`;
    refreshJobs();
  });

  $('cancel').addEventListener('click', async () => {
    if (!state.jobId) return;
    try {
      await api(`/v1/jobs/${state.jobId}/cancel`, { method: 'POST' });
    } catch (e) {
      $('player-note').textContent = e.message;
    }
    showJob(state.jobId, false);
  });

  // --- result ---------------------------------------------------------------------------
  // A rendition's measured VMAF (mean, and the 5th percentile: its worst moments), and the
  // setting the per-title probe chose for it (its reasons in the cell's tooltip).
  function quality(rendition, ladder) {
    const q = rendition.quality;
    const choice = ladder && ladder.rungs.find((c) => c.name === rendition.name);
    const text = q ? `VMAF ${q.mean.toFixed(1)} (p5 ${q.p5.toFixed(1)})` : 'not measured';
    const cell = el('span', { title: choice ? choice.reason : '' }, choice ? `${text} · CRF ${choice.crf}` : text);
    return cell;
  }

  function showResult(result) {
    if (state.shown) return;
    state.shown = true;
    $('player-box').hidden = false;
    const body = $('renditions').tBodies[0];
    for (const r of result.renditions) {
      const links = [];
      if (r.mp4) links.push(el('a', { href: r.mp4 }, 'mp4'), ' ');
      if (r.hls) links.push(el('a', { href: r.hls }, 'hls'));
      const codecs = r.audio_codec ? `${r.video_codec} + ${r.audio_codec}` : r.video_codec;
      body.append(row([r.name, `${r.width}×${r.height}`, codecs, `${Math.round(r.video_bit_rate / 1000)} kb/s`, quality(r, result.ladder), links]));
    }
    const s = result.source;
    describe($('source'), {
      container: s.container,
      displayed: `${s.display_width}×${s.display_height}`,
      duration: `${s.duration_secs.toFixed(2)} s`,
      codecs: [s.video_codec, s.audio_codec].filter(Boolean).join(' + '),
      orientation: s.orientation,
    });
    describe($('cost'), {
      estimate: `$${result.cost.estimated_usd.toFixed(6)}`,
      'cpu time': `${result.cost.cpu_secs.toFixed(2)} s`,
      'machine time': `${result.cost.machine_secs.toFixed(2)} s`,
      stored: `${formatBytes(result.cost.bytes_stored)} in ${result.file_count} files`,
    });
    const video = $('player');
    if (result.thumbnails) {
      video.poster = result.thumbnails.poster;
      $('poster').src = result.thumbnails.poster;
      $('poster').hidden = false;
      storyboard(result.thumbnails.storyboard_vtt);
    }
    if (state.playing) return;
    if (result.hls_master) {
      startPlayer(result.hls_master, false);
    } else {
      const mp4 = result.renditions.find((r) => r.mp4);
      if (mp4) video.src = mp4.mp4;
    }
  }

  // Plays an HLS master once per job: the stable URL of a job still encoding (`stable`: the
  // API's, which wants the key and is progressive), or a completed result's.
  function startPlayer(url, stable) {
    if (state.playing) return;
    state.playing = url;
    $('player-box').hidden = false;
    const video = $('player');
    if (window.Hls && window.Hls.isSupported()) {
      playHls(url, stable);
    } else if (video.canPlayType('application/vnd.apple.mpegurl') && !stable) {
      video.src = url;
    }
  }

  function resetPlayer() {
    if (state.hls) { state.hls.destroy(); state.hls = null; }
    state.playing = null;
    state.shown = false;
    window.tcoder.player = { levels: 0, audioTracks: 0, audioTrack: -1, subtitleTracks: 0, fatal: null, live: null, duration: 0 };
    $('quality-label').hidden = true;
    $('audio-label').hidden = true;
    $('subtitle-label').hidden = true;
    $('player').removeAttribute('src');
    $('player').removeAttribute('poster');
    $('player-note').textContent = '';
  }

  function playHls(url, stable) {
    const Hls = window.Hls;
    const config = { enableWorker: false };
    if (stable) {
      // The API's playlists want the key (never a URL parameter); the segments they lead to
      // are the store's (or signed playback URLs), which take none. From the start: a title
      // still encoding is a growing (EVENT) playlist, not a live one.
      config.startPosition = 0;
      config.xhrSetup = (xhr, target) => {
        if (target.startsWith(`${location.origin}/v1/jobs/`)) xhr.setRequestHeader('Authorization', `Bearer ${state.key}`);
      };
    }
    const hls = new Hls(config);
    state.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
      window.tcoder.player.levels = data.levels.length;
      // A split title's audio is a rendition of its own (EXT-X-MEDIA); otherwise none.
      window.tcoder.player.audioTracks = data.audioTracks.length;
      const select = $('quality');
      select.replaceChildren(el('option', { value: '-1' }, 'auto'));
      data.levels.forEach((level, i) => select.append(el('option', { value: String(i) }, `${level.height}p (${Math.round(level.bitrate / 1000)} kb/s)`)));
      $('quality-label').hidden = false;
      // Languages: one entry per audio rendition, and captions (off by default unless the
      // title says otherwise).
      const label = (track) => (track.lang ? `${track.name} (${track.lang})` : track.name);
      const audio = $('audio-track');
      audio.replaceChildren(...data.audioTracks.map((t, i) => el('option', { value: String(i) }, label(t))));
      $('audio-label').hidden = data.audioTracks.length < 2;
      window.tcoder.player.subtitleTracks = data.subtitleTracks.length;
      const subtitles = $('subtitle-track');
      subtitles.replaceChildren(el('option', { value: '-1' }, 'off'),
        ...data.subtitleTracks.map((t, i) => el('option', { value: String(i) }, label(t))));
      $('subtitle-label').hidden = data.subtitleTracks.length === 0;
    });
    hls.on(Hls.Events.AUDIO_TRACK_SWITCHED, (_, data) => {
      window.tcoder.player.audioTrack = data.id;
      $('audio-track').value = String(data.id);
    });
    hls.on(Hls.Events.SUBTITLE_TRACK_SWITCH, (_, data) => { $('subtitle-track').value = String(data.id); });
    // Whether the playlist is still growing (a title still encoding), for the viewer and tests.
    hls.on(Hls.Events.LEVEL_UPDATED, (_, data) => {
      window.tcoder.player.live = data.details.live;
      window.tcoder.player.duration = data.details.totalduration;
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) {
        window.tcoder.player.fatal = `${data.type}: ${data.details}`;
        $('player-note').textContent = `playback failed: ${data.details}`;
      }
    });
    hls.loadSource(url);
    hls.attachMedia($('player'));
  }

  $('quality').addEventListener('change', (e) => { if (state.hls) state.hls.currentLevel = Number(e.target.value); });
  $('audio-track').addEventListener('change', (e) => { if (state.hls) state.hls.audioTrack = Number(e.target.value); });
  $('subtitle-track').addEventListener('change', (e) => {
    if (!state.hls) return;
    state.hls.subtitleDisplay = true;
    state.hls.subtitleTrack = Number(e.target.value);
  });

  // Storyboard previews: the WebVTT maps time ranges to regions of one sprite image.
  async function storyboard(vttUrl) {
    let cues;
    try {
      const text = await (await fetch(vttUrl)).text();
      cues = parseVtt(text, vttUrl);
    } catch (e) {
      return;
    }
    const video = $('player');
    const preview = $('storyboard');
    video.addEventListener('mousemove', (e) => {
      const box = video.getBoundingClientRect();
      // Only over the controls' strip, where the seek bar is.
      if (!video.duration || e.clientY < box.bottom - 48) { preview.hidden = true; return; }
      const time = ((e.clientX - box.left) / box.width) * video.duration;
      const cue = cues.find((c) => time >= c.start && time < c.end);
      if (!cue) { preview.hidden = true; return; }
      Object.assign(preview.style, {
        left: `${Math.max(0, e.clientX - box.left - cue.w / 2)}px`,
        width: `${cue.w}px`, height: `${cue.h}px`,
        backgroundImage: `url("${cue.image}")`, backgroundPosition: `-${cue.x}px -${cue.y}px`,
      });
      preview.hidden = false;
    });
    video.addEventListener('mouseleave', () => { preview.hidden = true; });
  }

  function parseVtt(text, base) {
    const seconds = (t) => t.split(':').reduce((acc, part) => acc * 60 + Number(part), 0);
    const cues = [];
    for (const block of text.split(/\r?\n\r?\n/)) {
      const lines = block.split(/\r?\n/);
      const timing = lines.findIndex((l) => l.includes('-->'));
      if (timing < 0 || !lines[timing + 1]) continue;
      const [from, to] = lines[timing].split('-->').map((t) => seconds(t.trim()));
      const [file, fragment] = lines[timing + 1].split('#xywh=');
      const [x, y, w, h] = (fragment || '0,0,160,90').split(',').map(Number);
      cues.push({ start: from, end: to, image: new URL(file, base).href, x, y, w, h });
    }
    return cues;
  }

  // --- helpers --------------------------------------------------------------------------
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children.flat());
    return node;
  }

  function row(cells) {
    return el('tr', {}, ...cells.map((c) => el('td', {}, c)));
  }

  function describe(list, entries) {
    list.replaceChildren(...Object.entries(entries).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))]));
  }

  function formatDuration(secs) {
    if (typeof secs !== 'number') return '';
    const whole = Math.round(secs);
    const m = Math.floor(whole / 60);
    return `${m}:${String(whole % 60).padStart(2, '0')}`;
  }

  function formatBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // --- routing --------------------------------------------------------------------------
  function route() {
    const match = location.hash.match(/^#\/jobs\/(job_[0-9a-f]{32})$/);
    if (match && state.key) {
      if (state.jobId !== match[1]) openJob(match[1]);
    } else {
      state.jobId = null;
      if (state.follow) state.follow.abort();
      resetPlayer();
      $('job').hidden = true;
    }
  }

  window.addEventListener('hashchange', route);
  checkKey().then((ok) => { if (ok) { loadJobs(true); route(); } });
})();
