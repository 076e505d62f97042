//! How large a shipping batch may be: `[ship.clickhouse] batch_rows` and `batch_bytes`, cut
//! down while inserts time out (a link or server too slow for a full batch) and grown back as
//! they succeed.

use crate::config::ClickHouseConfig;

use super::outbox::Limit;

/// How far batches are cut below `[ship.clickhouse] batch_rows` and `batch_bytes`: halved
/// after each insert that timed out (a link or server too slow for a full batch within the
/// timeout), grown back one halving per [`BatchSize::GROW_AFTER`] successes in a row. Without
/// it, a batch too large for a slow link would be retried whole, and time out, forever.
#[derive(Debug, Default)]
pub struct BatchSize {
    halvings: u32,
    successes: u32,
}

impl BatchSize {
    /// Halvings at most: batches down to one row and 1/1024 of the bytes.
    const MOST: u32 = 10;
    /// Successes in a row before batches double again.
    const GROW_AFTER: u32 = 4;

    /// The batch limit now.
    pub fn limit(&self, config: &ClickHouseConfig) -> Limit {
        Limit {
            rows: (config.batch_rows >> self.halvings).max(1),
            bytes: (config.batch_bytes >> self.halvings).max(1),
        }
    }

    /// An insert timed out: the next batches are half as large.
    pub fn timed_out(&mut self) {
        self.successes = 0;
        if self.halvings < Self::MOST {
            self.halvings += 1;
            tracing::warn!(
                halvings = self.halvings,
                "a ClickHouse insert timed out: shipping smaller batches"
            );
        }
    }

    /// An insert went through: after [`Self::GROW_AFTER`] in a row, batches double.
    pub fn succeeded(&mut self) {
        self.successes += 1;
        if self.successes >= Self::GROW_AFTER {
            self.successes = 0;
            self.halvings = self.halvings.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_halve_after_each_timeout_and_grow_back_on_success() {
        let config = ClickHouseConfig {
            batch_rows: 5000,
            batch_bytes: 8 << 20,
            ..ClickHouseConfig::default()
        };
        let mut size = BatchSize::default();
        assert_eq!(
            size.limit(&config),
            Limit {
                rows: 5000,
                bytes: 8 << 20
            }
        );
        size.timed_out();
        size.timed_out();
        assert_eq!(
            size.limit(&config),
            Limit {
                rows: 1250,
                bytes: 2 << 20
            }
        );
        for _ in 0..50 {
            size.timed_out();
        }
        assert_eq!(size.limit(&config).rows, 4, "bounded halvings");
        for _ in 0..BatchSize::GROW_AFTER - 1 {
            size.succeeded();
        }
        assert_eq!(size.limit(&config).rows, 4);
        size.succeeded();
        assert_eq!(size.limit(&config).rows, 9);
        for _ in 0..200 {
            size.succeeded();
        }
        assert_eq!(
            size.limit(&config),
            Limit {
                rows: 5000,
                bytes: 8 << 20
            }
        );
    }
}
