//! What a job cost: the resources it used, measured by the worker, and an estimate in US
//! dollars from operator-configured prices.
//!
//! The estimate is deliberately simple arithmetic on measured quantities so an operator can
//! check it against the bill: machine-seconds × machine price (Fly bills a running machine per
//! second, by size), engine CPU-seconds × CPU price (for hosts billed by CPU use), stored bytes
//! × storage price × months kept, and object PUTs × the Class A operation price (R2 and S3
//! charge per write request; a multipart upload is create + parts + complete).

use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::s3::transfer::{MULTIPART_THRESHOLD, PART_SIZE};

/// `[worker.cost]`: prices used for the per-job estimate. All default to list prices for the
/// production target (Fly Machines + R2) at the time of writing; set them to your contract.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// USD per second a worker machine runs (its whole size: CPUs and RAM).
    pub machine_second_usd: f64,
    /// USD per CPU-second used by the engine (0 when machines are billed by time only).
    pub cpu_second_usd: f64,
    /// USD per GB (10^9 bytes) stored for a month.
    pub storage_gb_month_usd: f64,
    /// Months the outputs are expected to be kept, for the storage part of the estimate.
    pub storage_months: f64,
    /// USD per write request (R2 "Class A" operation).
    pub class_a_operation_usd: f64,
}

impl Default for Prices {
    fn default() -> Prices {
        Prices {
            machine_second_usd: 0.000_004_4,
            cpu_second_usd: 0.0,
            storage_gb_month_usd: 0.015,
            storage_months: 1.0,
            class_a_operation_usd: 0.000_004_5,
        }
    }
}

impl Prices {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        for (key, value) in [
            ("cost.machine_second_usd", self.machine_second_usd),
            ("cost.cpu_second_usd", self.cpu_second_usd),
            ("cost.storage_gb_month_usd", self.storage_gb_month_usd),
            ("cost.storage_months", self.storage_months),
            ("cost.class_a_operation_usd", self.class_a_operation_usd),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(Invalid::new(key, "a price must be a finite number ≥ 0"));
            }
        }
        Ok(())
    }

    /// The estimated cost of `usage` in USD.
    pub fn estimate(&self, usage: &Usage) -> f64 {
        usage.machine_secs * self.machine_second_usd
            + usage.cpu_secs * self.cpu_second_usd
            + usage.bytes_stored as f64 / 1e9 * self.storage_gb_month_usd * self.storage_months
            + usage.put_requests as f64 * self.class_a_operation_usd
    }
}

/// Resources one job used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Engine CPU-seconds (user + system of the engine process tree).
    pub cpu_secs: f64,
    /// Seconds of machine time the job occupied (download + engine + upload).
    pub machine_secs: f64,
    /// Output bytes stored.
    pub bytes_stored: u64,
    /// Write requests made to store the outputs.
    pub put_requests: u64,
}

impl Usage {
    /// Counts one stored object of `bytes`, with the requests the uploader makes for it.
    pub fn add_object(&mut self, bytes: u64) {
        self.bytes_stored += bytes;
        self.put_requests += put_requests(bytes);
    }
}

/// Write requests the uploader makes for an object of `bytes`: one PUT, or for a multipart
/// upload create + one per part + complete.
pub fn put_requests(bytes: u64) -> u64 {
    if bytes < MULTIPART_THRESHOLD { 1 } else { bytes.div_ceil(PART_SIZE) + 2 }
}

/// The `cost` object of a job's outputs: the usage and its estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobCost {
    #[serde(flatten)]
    pub usage: Usage,
    /// Estimated USD from the configured prices.
    pub estimated_usd: f64,
    /// The prices the estimate used, so a later price change does not rewrite history.
    pub prices: Prices,
}

impl JobCost {
    pub fn new(usage: Usage, prices: &Prices) -> JobCost {
        JobCost { estimated_usd: prices.estimate(&usage), usage, prices: prices.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_uploads_count_create_parts_and_complete() {
        assert_eq!(put_requests(0), 1);
        assert_eq!(put_requests(MULTIPART_THRESHOLD - 1), 1);
        // 16 MiB = 2 parts of 8 MiB.
        assert_eq!(put_requests(MULTIPART_THRESHOLD), 4);
        assert_eq!(put_requests(MULTIPART_THRESHOLD + 1), 5);
    }

    #[test]
    fn the_estimate_is_the_sum_of_its_parts() {
        let prices = Prices {
            machine_second_usd: 0.01,
            cpu_second_usd: 0.1,
            storage_gb_month_usd: 2.0,
            storage_months: 3.0,
            class_a_operation_usd: 1.0,
        };
        let mut usage = Usage { cpu_secs: 2.0, machine_secs: 100.0, ..Usage::default() };
        usage.add_object(500_000_000);
        usage.add_object(10);
        // 1.0 machine + 0.2 CPU + 0.5 GB × 2 × 3 = 3.0 storage + 2 PUT... the big object is
        // multipart: ceil(500 MB / 8 MiB) = 60 parts + 2 → 62, plus 1 → 63 requests.
        assert_eq!(usage.put_requests, 63);
        let estimate = prices.estimate(&usage);
        assert!((estimate - (1.0 + 0.2 + 3.000_000_06 + 63.0)).abs() < 1e-6, "{estimate}");
    }

    #[test]
    fn negative_or_nan_prices_are_rejected_by_key() {
        let mut prices = Prices { storage_months: f64::NAN, ..Prices::default() };
        assert!(format!("{:?}", prices.validate().unwrap_err()).contains("cost.storage_months"));
        prices.storage_months = 1.0;
        prices.class_a_operation_usd = -1.0;
        assert!(format!("{:?}", prices.validate().unwrap_err()).contains("class_a_operation_usd"));
    }
}
