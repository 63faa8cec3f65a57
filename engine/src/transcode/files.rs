//! The files an engine run leaves: every regular file under the output folder, with its
//! content type, and the I/O errors of making them.

use super::*;

pub(crate) fn io_error(e: std::io::Error) -> EngineError {
    let code = match e.raw_os_error() {
        Some(errno) if errno == ffmpeg::util::error::ENOSPC => ErrorCode::DiskFull,
        Some(errno) if errno == ffmpeg::util::error::EFBIG => ErrorCode::Disk,
        _ => ErrorCode::Failed,
    };
    EngineError::new(code, e.to_string())
}

/// Where a chunk writes its share of the thumbnails, under its output directory.
pub(crate) const THUMBNAIL_PARTS_DIR: &str = "thumbs/part";

/// Every file under `dir` with its size and content type, paths relative and sorted.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<OutputFile>, EngineError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative =
                path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let bytes = std::fs::metadata(&path).map_err(io_error)?.len();
            files.push(OutputFile {
                content_type: content_type(&relative).to_owned(),
                path: relative,
                bytes,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

pub(crate) fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("mp4") => "video/mp4",
        Some("m4s") => "video/iso.segment",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("vtt") => "text/vtt",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}
