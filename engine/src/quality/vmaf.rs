//! libvmaf (built from its vendored source, model `vmaf_v0.6.1` compiled in): the one place
//! the engine calls it. Pairs of pictures in, one score per pair out.

use std::ffi::CStr;

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use tcoder::engine::quality::scored_in_window;
use vmaf_head_sys as sys;

/// The model every score comes from: VMAF's default, trained for 1080p viewing on a TV-sized
/// screen at three picture heights.
pub(crate) const MODEL: &CStr = c"vmaf_v0.6.1";

/// One run of scores over consecutive pictures (a sampled window: VMAF's motion feature
/// compares each picture with its neighbours, so a run never spans a gap).
pub(crate) struct Vmaf {
    context: *mut sys::VmafContext,
    model: *mut sys::VmafModel,
    pictures: u32,
    /// Every this many pictures are scored.
    every: u32,
}

impl Vmaf {
    /// Scores every `every`th picture pushed (the first included).
    pub(crate) fn new(every: u32) -> Result<Vmaf, String> {
        let every = every.max(1);
        let config = sys::VmafConfiguration {
            log_level: sys::VmafLogLevel_VMAF_LOG_LEVEL_NONE,
            // Scored on the calling thread: the encoders' threads already fill the machine.
            n_threads: 0,
            n_subsample: every,
            cpumask: 0,
            gpumask: 0,
        };
        let mut vmaf =
            Vmaf { context: std::ptr::null_mut(), model: std::ptr::null_mut(), pictures: 0, every };
        // SAFETY: out-pointers to fields we own; on failure `Drop` frees what was made.
        unsafe {
            check(sys::vmaf_init(&mut vmaf.context, config), "vmaf_init")?;
            let mut model_config = sys::VmafModelConfig {
                name: c"vmaf".as_ptr(),
                flags: u64::from(sys::VmafModelFlags_VMAF_MODEL_FLAGS_DEFAULT),
            };
            check(
                sys::vmaf_model_load(&mut vmaf.model, &mut model_config, MODEL.as_ptr()),
                "vmaf_model_load",
            )?;
            check(sys::vmaf_use_features_from_model(vmaf.context, vmaf.model), "vmaf features")?;
        }
        Ok(vmaf)
    }

    /// Scores `distorted` against `reference`: the same size and 4:2:0 format, 8 or 10 bits.
    pub(crate) fn push(
        &mut self,
        reference: &frame::Video,
        distorted: &frame::Video,
    ) -> Result<(), String> {
        if (reference.width(), reference.height(), reference.format())
            != (distorted.width(), distorted.height(), distorted.format())
        {
            return Err("reference and distorted pictures differ in size or format".into());
        }
        let mut pictures = [picture_of(reference)?, picture_of(distorted)?];
        // SAFETY: both pictures were allocated by libvmaf, which takes them over (it unrefs
        // them itself, on success and on failure).
        let status = unsafe {
            sys::vmaf_read_pictures(self.context, &mut pictures[0], &mut pictures[1], self.pictures)
        };
        check(status, "vmaf_read_pictures")?;
        self.pictures += 1;
        Ok(())
    }

    /// The scored pictures' scores, in the order they were pushed (`scored_in_window`).
    pub(crate) fn finish(self) -> Result<Vec<f64>, String> {
        if self.pictures == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: null pictures flush the context (its documented end of input).
        unsafe {
            check(
                sys::vmaf_read_pictures(
                    self.context,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                ),
                "vmaf flush",
            )?;
        }
        scored_in_window(self.pictures as usize, self.every)
            .into_iter()
            .map(|index| {
                let index = index as u32;
                let mut score = 0.0;
                // SAFETY: an index below the count read, after the flush.
                let status = unsafe {
                    sys::vmaf_score_at_index(self.context, self.model, &mut score, index)
                };
                check(status, "vmaf_score_at_index").map(|()| score)
            })
            .collect()
    }
}

impl Drop for Vmaf {
    fn drop(&mut self) {
        // SAFETY: each pointer is null or what libvmaf gave us, freed once here.
        unsafe {
            if !self.model.is_null() {
                sys::vmaf_model_destroy(self.model);
            }
            if !self.context.is_null() {
                sys::vmaf_close(self.context);
            }
        }
    }
}

fn check(status: std::os::raw::c_int, what: &str) -> Result<(), String> {
    match status {
        0 => Ok(()),
        error => Err(format!("{what} failed ({error})")),
    }
}

/// Bits per sample of the formats scored (the encoders' 4:2:0 input), else none.
pub(crate) fn bits_of(format: Pixel) -> Option<u32> {
    match format {
        Pixel::YUV420P => Some(8),
        Pixel::YUV420P10LE => Some(10),
        _ => None,
    }
}

/// A libvmaf picture holding a copy of `frame`'s planes.
fn picture_of(frame: &frame::Video) -> Result<sys::VmafPicture, String> {
    let bits = bits_of(frame.format()).ok_or("only 4:2:0 pictures of 8 or 10 bits are scored")?;
    let bytes_per_sample = if bits > 8 { 2 } else { 1 };
    // SAFETY: an all-zero VmafPicture is the "empty" value vmaf_picture_alloc fills in.
    let mut picture: sys::VmafPicture = unsafe { std::mem::zeroed() };
    // SAFETY: allocates planes of the given size into `picture`.
    let status = unsafe {
        sys::vmaf_picture_alloc(
            &mut picture,
            sys::VmafPixelFormat_VMAF_PIX_FMT_YUV420P,
            bits,
            frame.width(),
            frame.height(),
        )
    };
    check(status, "vmaf_picture_alloc")?;
    for plane in 0..3 {
        let rows = picture.h[plane] as usize;
        let row_bytes = picture.w[plane] as usize * bytes_per_sample;
        let source = frame.data(plane);
        let source_stride = frame.stride(plane);
        let target_stride = picture.stride[plane] as usize;
        for row in 0..rows {
            let from = &source[row * source_stride..row * source_stride + row_bytes];
            // SAFETY: libvmaf allocated `rows` rows of `target_stride >= row_bytes` bytes.
            unsafe {
                let to = (picture.data[plane] as *mut u8).add(row * target_stride);
                std::ptr::copy_nonoverlapping(from.as_ptr(), to, row_bytes);
            }
        }
    }
    Ok(picture)
}
