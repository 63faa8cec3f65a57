//! Object key layout. Keys are chosen by the server from validated ids; clients never supply
//! path parts. Every key and folder here is a canonical [`Key`] / [`KeyPrefix`].
//!
//! - inputs: `uploads/<tenant>/<job_id>/source`, caption files `uploads/<tenant>/<job_id>/captions/<n>`
//! - outputs: `outputs/<tenant>/<job_id>/<epoch>/…`

use super::{Key, KeyPrefix};
use crate::jobs::{JobId, Tenant};

/// Prefix of every upload.
pub const UPLOADS_PREFIX: &str = "uploads/";

/// The folder of every upload.
pub fn uploads() -> KeyPrefix {
    KeyPrefix::assembled(UPLOADS_PREFIX.to_owned())
}

/// The folder of a tenant's uploads; its producers may name objects in it only.
pub fn tenant_uploads(tenant: &Tenant) -> KeyPrefix {
    KeyPrefix::assembled(format!("{UPLOADS_PREFIX}{tenant}/"))
}

/// Where a job's source is uploaded.
pub fn upload_key(tenant: &Tenant, job: &JobId) -> Key {
    Key::assembled(format!("{UPLOADS_PREFIX}{tenant}/{job}/source"))
}

/// The folder of a job's own uploads (its source and caption files), removed with the job.
pub fn job_uploads_prefix(tenant: &Tenant, job: &JobId) -> KeyPrefix {
    KeyPrefix::assembled(format!("{UPLOADS_PREFIX}{tenant}/{job}/"))
}

/// The tenant and job of an upload key, if it is one (and only in its exact shape).
pub fn parse_upload_key(key: &Key) -> Option<(Tenant, JobId)> {
    let rest = key.as_str().strip_prefix(UPLOADS_PREFIX)?;
    let mut parts = rest.split('/');
    let (tenant, job, leaf) = (parts.next()?, parts.next()?, parts.next()?);
    if leaf != "source" || parts.next().is_some() {
        return None;
    }
    Some((Tenant::parse(tenant)?, JobId::parse(job)?))
}

/// Where a job's `n`th uploaded caption file goes.
pub fn caption_upload_key(tenant: &Tenant, job: &JobId, n: usize) -> Key {
    Key::assembled(format!("{UPLOADS_PREFIX}{tenant}/{job}/captions/{n}"))
}

/// The tenant, job and number of a caption upload key, if it is one (and only in its exact
/// shape: `n` in decimal without leading zeros, below [`MAX_SIDECARS`](crate::jobs::MAX_SIDECARS)).
pub fn parse_caption_upload_key(key: &Key) -> Option<(Tenant, JobId, usize)> {
    let rest = key.as_str().strip_prefix(UPLOADS_PREFIX)?;
    let mut parts = rest.split('/');
    let (tenant, job, folder, leaf) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if folder != "captions" || parts.next().is_some() {
        return None;
    }
    let n: usize = leaf.parse().ok().filter(|n: &usize| n.to_string() == leaf)?;
    if n >= crate::jobs::MAX_SIDECARS {
        return None;
    }
    Some((Tenant::parse(tenant)?, JobId::parse(job)?, n))
}

/// Prefix of every output.
pub const OUTPUTS_PREFIX: &str = "outputs/";

/// The folder of every output.
pub fn outputs() -> KeyPrefix {
    KeyPrefix::assembled(OUTPUTS_PREFIX.to_owned())
}

/// Prefix of every attempt's outputs of one job.
pub fn job_outputs_prefix(tenant: &Tenant, job: &JobId) -> KeyPrefix {
    KeyPrefix::assembled(format!("{OUTPUTS_PREFIX}{tenant}/{job}/"))
}

/// Prefix under which every output of one attempt (epoch) is written.
pub fn output_prefix(tenant: &Tenant, job: &JobId, epoch: u64) -> KeyPrefix {
    KeyPrefix::assembled(format!("{OUTPUTS_PREFIX}{tenant}/{job}/{epoch}/"))
}

/// The folder of every part's outputs of a split job.
pub fn job_parts_prefix(tenant: &Tenant, job: &JobId) -> KeyPrefix {
    KeyPrefix::assembled(format!("{OUTPUTS_PREFIX}{tenant}/{job}/parts/"))
}

/// Prefix under which one attempt (the part's `epoch`) at part `part` of a split job writes
/// its outputs, until the stitch has made the title's from them. Under the job's prefix, so
/// the winning attempt's commit removes them with the losers' outputs.
pub fn part_output_prefix(tenant: &Tenant, job: &JobId, part: u32, epoch: u64) -> KeyPrefix {
    KeyPrefix::assembled(format!("{OUTPUTS_PREFIX}{tenant}/{job}/parts/{part}/{epoch}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_keys_round_trip_and_nothing_else_parses() {
        let tenant = Tenant::parse("acme").unwrap();
        let job = JobId::generate();
        let key = upload_key(&tenant, &job);
        assert_eq!(parse_upload_key(&key), Some((tenant, job.clone())));
        for bad in [
            format!("uploads/acme/{job}/source/x"),
            format!("uploads/acme/{job}/other"),
            format!("uploads/ACME/{job}/source"),
            format!("outputs/acme/{job}/source"),
            "uploads/acme/job_1/source".to_owned(),
        ] {
            assert_eq!(parse_upload_key(&Key::parse(&bad).unwrap()), None, "{bad}");
        }
    }

    #[test]
    fn caption_upload_keys_round_trip_and_nothing_else_parses() {
        let tenant = Tenant::parse("acme").unwrap();
        let job = JobId::generate();
        let key = caption_upload_key(&tenant, &job, 3);
        assert_eq!(parse_caption_upload_key(&key), Some((tenant.clone(), job.clone(), 3)));
        assert_eq!(parse_upload_key(&key), None, "a caption is not the job's source");
        assert_eq!(parse_caption_upload_key(&upload_key(&tenant, &job)), None);
        for bad in [
            format!("uploads/acme/{job}/captions/03"),
            format!("uploads/acme/{job}/captions/+3"),
            format!("uploads/acme/{job}/captions/8"),
            format!("uploads/acme/{job}/captions/3/x"),
            format!("uploads/acme/{job}/subs/3"),
            format!("uploads/ACME/{job}/captions/3"),
            "uploads/acme/job_1/captions/0".to_owned(),
        ] {
            assert_eq!(parse_caption_upload_key(&Key::parse(&bad).unwrap()), None, "{bad}");
        }
    }
}
