//! The source as the engine reads it: a local file the worker may still be downloading. Every
//! read of the source (FFmpeg's, through a custom I/O context, and the engine's own sniffing
//! and box parsing) goes through [`SourceFile`], which hands out a byte only once the worker's
//! arrival record ([`Arrived`]) says it is on disk — the rest of the file is a hole that would
//! read as zeros — and waits for it otherwise, bounded.

use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Input;
use tcoder::engine::protocol::Arrived;
use tcoder::engine::{EngineError, ErrorCode};

/// How often a wait looks at the arrival record again.
const POLL: Duration = Duration::from_millis(20);
/// The longest a read waits with nothing new arriving: longer than the worker waits out a
/// store outage (the worker stops the engine itself when its download fails), so this only
/// ends a wait nobody would end.
const STALL: Duration = Duration::from_secs(20 * 60);
/// FFmpeg's read buffer.
const IO_BUFFER: usize = 256 * 1024;

/// The source file, read only where its bytes have arrived.
pub(crate) struct SourceFile {
    file: File,
    position: u64,
    /// The arrival record; `None` when the file was complete when opened.
    record: Option<PathBuf>,
    arrived: Arrived,
}

impl SourceFile {
    pub(crate) fn open(path: &Path) -> io::Result<SourceFile> {
        let file = File::open(path)?;
        let record = Arrived::beside(path);
        let (record, arrived) = match read_record(&record)? {
            Some(arrived) => (Some(record), arrived),
            None => {
                let size = file.metadata()?.len();
                (None, Arrived { head: size, tail: size, size, failed: false })
            }
        };
        Ok(SourceFile { file, position: 0, record, arrived })
    }

    /// The source's size, whether or not all of it is here yet.
    pub(crate) fn len(&self) -> u64 {
        self.arrived.size
    }

    /// Bytes readable at `offset` at once: waits until at least one is (0 only at the end).
    fn wait_for(&mut self, offset: u64) -> io::Result<u64> {
        let (mut last_change, mut waited) = (Instant::now(), false);
        loop {
            let readable = self.arrived.readable_at(offset);
            if readable > 0 || offset >= self.arrived.size {
                return Ok(readable);
            }
            if self.arrived.failed {
                return Err(io::Error::other("the source's download failed"));
            }
            let Some(record) = &self.record else { return Ok(0) };
            if waited && last_change.elapsed() > STALL {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no more of the source arrived in {} s", STALL.as_secs()),
                ));
            }
            std::thread::sleep(POLL);
            waited = true;
            match read_record(record)? {
                Some(fresh) if fresh.size == self.arrived.size => {
                    if fresh != self.arrived {
                        last_change = Instant::now();
                    }
                    self.arrived = fresh;
                }
                _ => return Err(io::Error::other("the source's arrival record is unreadable")),
            }
        }
    }
}

/// The record beside the source; `None` when there is none (the source is complete).
fn read_record(record: &Path) -> io::Result<Option<Arrived>> {
    match std::fs::read_to_string(record) {
        Ok(text) => Arrived::parse(&text)
            .map(Some)
            .ok_or_else(|| io::Error::other("the source's arrival record is unreadable")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Read for SourceFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let readable = self.wait_for(self.position)?;
        let want = buf.len().min(usize::try_from(readable).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let read = self.file.read_at(&mut buf[..want], self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for SourceFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.arrived.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the source")
        })?;
        self.position = target;
        Ok(target)
    }
}

/// An FFmpeg I/O context reading a [`SourceFile`]. Freed after the format context that uses
/// it (see [`Source`]).
struct CustomIo {
    context: *mut ffi::AVIOContext,
    /// What the callbacks read; boxed so its address stays put.
    _source: Box<SourceFile>,
}

impl CustomIo {
    fn new(source: SourceFile) -> Result<CustomIo, EngineError> {
        let memory = || EngineError::new(ErrorCode::Memory, "cannot allocate the source's reader");
        let mut source = Box::new(source);
        // SAFETY: a plain allocation, handed to the I/O context (which may replace it).
        let buffer = unsafe { ffi::av_malloc(IO_BUFFER) }.cast::<u8>();
        if buffer.is_null() {
            return Err(memory());
        }
        let opaque = std::ptr::from_mut::<SourceFile>(&mut source).cast::<c_void>();
        // SAFETY: `buffer` is av_malloc'd of IO_BUFFER bytes; `opaque` outlives the context
        // (both are owned by the returned value, the context freed first).
        let context = unsafe {
            ffi::avio_alloc_context(
                buffer,
                IO_BUFFER as libc::c_int,
                0,
                opaque,
                Some(read_packet),
                None,
                Some(seek),
            )
        };
        if context.is_null() {
            // SAFETY: the buffer is still ours.
            unsafe { ffi::av_free(buffer.cast()) };
            return Err(memory());
        }
        Ok(CustomIo { context, _source: source })
    }
}

impl Drop for CustomIo {
    fn drop(&mut self) {
        // SAFETY: the context and its (possibly reallocated) buffer are ours; nothing uses them
        // any more (the format context was closed first).
        unsafe {
            ffi::av_freep(std::ptr::addr_of_mut!((*self.context).buffer).cast());
            ffi::avio_context_free(&mut self.context);
        }
    }
}

unsafe extern "C" fn read_packet(
    opaque: *mut c_void,
    buf: *mut u8,
    size: libc::c_int,
) -> libc::c_int {
    // SAFETY: `opaque` is the boxed SourceFile of the CustomIo that owns this context; FFmpeg
    // hands a buffer of `size` bytes.
    let (source, buf) = unsafe {
        (
            &mut *opaque.cast::<SourceFile>(),
            std::slice::from_raw_parts_mut(buf, usize::try_from(size).unwrap_or(0)),
        )
    };
    match source.read(buf) {
        Ok(0) => ffi::AVERROR_EOF,
        Ok(read) => libc::c_int::try_from(read).unwrap_or(libc::c_int::MAX),
        Err(_) => ffi::AVERROR(libc::EIO),
    }
}

unsafe extern "C" fn seek(opaque: *mut c_void, offset: i64, whence: libc::c_int) -> i64 {
    // SAFETY: as in `read_packet`.
    let source = unsafe { &mut *opaque.cast::<SourceFile>() };
    if whence & ffi::AVSEEK_SIZE != 0 {
        return i64::try_from(source.len()).unwrap_or(-1);
    }
    let to = match whence & !ffi::AVSEEK_FORCE {
        libc::SEEK_SET => match u64::try_from(offset) {
            Ok(offset) => SeekFrom::Start(offset),
            Err(_) => return i64::from(ffi::AVERROR(libc::EINVAL)),
        },
        libc::SEEK_CUR => SeekFrom::Current(offset),
        libc::SEEK_END => SeekFrom::End(offset),
        _ => return i64::from(ffi::AVERROR(libc::EINVAL)),
    };
    match source.seek(to) {
        Ok(at) => i64::try_from(at).unwrap_or(-1),
        Err(_) => i64::from(ffi::AVERROR(libc::EINVAL)),
    }
}

/// An opened source: FFmpeg's format context over the [`SourceFile`] reader. Reads as the
/// [`Input`] it holds.
pub struct Source {
    /// Declared first: closed before the I/O context it reads through is freed.
    input: Input,
    _io: CustomIo,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("format", &self.input.format().name()).finish()
    }
}

impl std::ops::Deref for Source {
    type Target = Input;
    fn deref(&self) -> &Input {
        &self.input
    }
}

impl std::ops::DerefMut for Source {
    fn deref_mut(&mut self) -> &mut Input {
        &mut self.input
    }
}

/// Opens `path` (the source) for FFmpeg through a [`SourceFile`], with `options` (the
/// allowlists and probe sizes; freed by the caller). `name` is what FFmpeg calls it.
pub(crate) fn open_input(
    path: &Path,
    name: &std::ffi::CStr,
    options: &mut *mut ffi::AVDictionary,
) -> Result<Source, EngineError> {
    let file = SourceFile::open(path)
        .map_err(|e| EngineError::new(ErrorCode::Failed, format!("cannot open input: {e}")))?;
    let io = CustomIo::new(file)?;
    // SAFETY: a fresh format context; on failure avformat_open_input frees it.
    let mut context = unsafe { ffi::avformat_alloc_context() };
    if context.is_null() {
        return Err(EngineError::new(ErrorCode::Memory, "cannot allocate the source's context"));
    }
    // SAFETY: `context` is ours; with AVFMT_FLAG_CUSTOM_IO FFmpeg never closes `pb` itself.
    let opened = unsafe {
        (*context).pb = io.context;
        (*context).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
        ffi::avformat_open_input(&mut context, name.as_ptr(), std::ptr::null_mut(), options)
    };
    if opened < 0 {
        let error = ffmpeg_next::Error::from(opened);
        let code = match error {
            ffmpeg_next::Error::Other { errno } if errno == libc::ENOMEM => ErrorCode::Memory,
            _ => ErrorCode::Corrupt,
        };
        return Err(EngineError::new(code, format!("cannot open the container: {error}")));
    }
    // SAFETY: `context` is a valid, opened format context from here on, owned by `input`.
    Ok(Source { input: unsafe { Input::wrap(context) }, _io: io })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &Path, arrived: Arrived) {
        let record = Arrived::beside(path);
        let staged = record.with_extension("staged");
        std::fs::write(&staged, arrived.encode()).unwrap();
        std::fs::rename(staged, record).unwrap();
    }

    /// The worker's side: the start, then the end, then the middle, each recorded once written.
    #[test]
    fn a_source_still_arriving_reads_only_bytes_that_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source");
        let bytes: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8 + 1).collect();
        let size = bytes.len() as u64;
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        record(&path, Arrived::nothing(size));

        let reader = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut source = SourceFile::open(&path).unwrap();
                assert_eq!(source.len(), size);
                // The end first (as a demuxer looking for an index), then from the start.
                source.seek(SeekFrom::End(-1000)).unwrap();
                let mut tail = vec![0; 1000];
                source.read_exact(&mut tail).unwrap();
                source.seek(SeekFrom::Start(0)).unwrap();
                let mut all = Vec::new();
                source.read_to_end(&mut all).unwrap();
                (tail, all)
            })
        };
        let write = |range: std::ops::Range<usize>| {
            file.write_all_at(&bytes[range.clone()], range.start as u64).unwrap();
        };
        write(0..100_000);
        record(&path, Arrived { head: 100_000, ..Arrived::nothing(size) });
        write(250_000..300_000);
        record(&path, Arrived { head: 100_000, tail: 250_000, ..Arrived::nothing(size) });
        write(100_000..250_000);
        record(&path, Arrived { head: size, tail: 250_000, ..Arrived::nothing(size) });
        let (tail, all) = reader.join().unwrap();
        assert_eq!(tail, bytes[bytes.len() - 1000..]);
        assert_eq!(all, bytes, "a byte read before it arrived");
    }

    #[test]
    fn a_failed_download_ends_a_wait_with_an_error_and_a_complete_file_needs_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source");
        File::create(&path).unwrap().set_len(1000).unwrap();
        record(&path, Arrived { head: 10, ..Arrived::nothing(1000) });
        let mut source = SourceFile::open(&path).unwrap();
        let mut buffer = [0u8; 100];
        assert_eq!(source.read(&mut buffer).unwrap(), 10);
        record(&path, Arrived { head: 10, failed: true, ..Arrived::nothing(1000) });
        assert!(source.read(&mut buffer).is_err());

        std::fs::remove_file(Arrived::beside(&path)).unwrap();
        let mut complete = SourceFile::open(&path).unwrap();
        let mut all = Vec::new();
        complete.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 1000);
    }
}
