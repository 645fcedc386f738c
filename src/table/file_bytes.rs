//! Per log file, how many bytes of it the table's live values take: what the
//! disk engine's merges (`log::merge`) weigh a sealed segment by. A file whose
//! live bytes are a small part of its size is mostly records of overwritten
//! or deleted keys, and worth rewriting.
//!
//! Kept as entries come and go ([`crate::table::Table`] counts every entry
//! in and out of its map), so that choosing what to merge never walks the
//! table. A record is counted as its key, its value and [`RECORD_FRAME_BYTES`]:
//! what a PUT record takes, less the padding that places records in blocks
//! (`log::blocks`), which the merge policy scales for.

use crate::entry::Footprint;
use std::collections::HashMap;

/// What a PUT record adds to its key and value: the header, the version,
/// the lengths (the record format's fixed part, rounded up).
pub const RECORD_FRAME_BYTES: u64 = 32;

/// Live record bytes per log file number.
#[derive(Debug, Default)]
pub struct FileBytes {
    by_file: HashMap<u32, u64>,
}

impl FileBytes {
    /// An entry of `footprint` entered the table.
    pub fn count_in(&mut self, footprint: &Footprint) {
        if let Some(file) = footprint.on_disk_file {
            *self.by_file.entry(file).or_default() += record_bytes(footprint);
        }
    }

    /// An entry of `footprint` left the table.
    pub fn count_out(&mut self, footprint: &Footprint) {
        let Some(file) = footprint.on_disk_file else {
            return;
        };
        if let Some(bytes) = self.by_file.get_mut(&file) {
            *bytes = bytes.saturating_sub(record_bytes(footprint));
            if *bytes == 0 {
                self.by_file.remove(&file);
            }
        }
    }

    /// The live record bytes of file `file`.
    pub fn of(&self, file: u32) -> u64 {
        self.by_file.get(&file).copied().unwrap_or(0)
    }
}

fn record_bytes(footprint: &Footprint) -> u64 {
    (footprint.key_bytes + footprint.value_bytes) as u64 + RECORD_FRAME_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(file: u32, value_bytes: usize) -> Footprint {
        Footprint {
            on_disk_file: Some(file),
            ..Footprint::of_parts(8, value_bytes, 1)
        }
    }

    #[test]
    fn live_bytes_follow_entries_in_and_out_of_each_file() {
        let mut bytes = FileBytes::default();
        bytes.count_in(&on_disk(1, 1000));
        bytes.count_in(&on_disk(1, 100));
        bytes.count_in(&on_disk(2, 10));
        bytes.count_in(&Footprint::of_parts(8, 5000, 1));
        assert_eq!(bytes.of(1), 1008 + 108 + 2 * RECORD_FRAME_BYTES);
        assert_eq!(bytes.of(2), 18 + RECORD_FRAME_BYTES);
        bytes.count_out(&on_disk(1, 1000));
        bytes.count_out(&on_disk(2, 10));
        assert_eq!(bytes.of(1), 108 + RECORD_FRAME_BYTES);
        assert_eq!(bytes.of(2), 0);
        assert_eq!(bytes.of(3), 0);
    }
}
