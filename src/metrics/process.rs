//! The standard `process_*` figures (the names every Prometheus client
//! library exports), read from `/proc/self` when `/metrics` is served.

use std::fs;

/// What the process uses, as Prometheus's process collector reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFigures {
    /// Seconds since the Unix epoch at which the process started.
    pub start_time_seconds: Option<f64>,
    /// User and system CPU time.
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// The soft RLIMIT_NOFILE.
    pub max_fds: Option<u64>,
}

/// Reads the figures; one that cannot be read is `None` (and left off the page).
pub fn read() -> ProcessFigures {
    let stat = fs::read_to_string("/proc/self/stat").ok();
    let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
    // Fields of /proc/<pid>/stat, numbered from 1 as in proc(5); `fields`
    // starts at field 3, the first after the parenthesised command name.
    let field = |number: usize| fields.get(number - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = sysconf(libc::_SC_CLK_TCK);
    let page_bytes = sysconf(libc::_SC_PAGESIZE);
    let cpu_ticks = field(14).zip(field(15)).map(|(user, system)| user + system);
    ProcessFigures {
        start_time_seconds: field(22)
            .zip(ticks)
            .zip(boot_time_seconds())
            .map(|((start, ticks), boot)| boot as f64 + start as f64 / ticks as f64),
        cpu_seconds: cpu_ticks
            .zip(ticks)
            .map(|(cpu, ticks)| cpu as f64 / ticks as f64),
        resident_memory_bytes: field(24).zip(page_bytes).map(|(pages, page)| pages * page),
        virtual_memory_bytes: field(23),
        open_fds: fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64),
        max_fds: max_fds(),
    }
}

/// The fields after the command name, which may itself hold spaces and ')'.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rfind(')')
        .map(|end| stat[end + 1..].split_whitespace().collect())
        .unwrap_or_default()
}

fn boot_time_seconds() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|seconds| seconds.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    crate::sys::sysconf(name)
}

fn max_fds() -> Option<u64> {
    crate::sys::nofile_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_process_reports_every_figure() {
        let figures = read();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let started = figures.start_time_seconds.expect("start time");
        assert!(started > 1e9 && started <= now + 1.0, "{started} vs {now}");
        assert!(figures.resident_memory_bytes.expect("rss") > 0);
        assert!(figures.virtual_memory_bytes.expect("vsize") > 0);
        assert!(figures.open_fds.expect("fds") >= 3);
        assert!(figures.max_fds.expect("limit") >= figures.open_fds.expect("fds"));
        assert!(figures.cpu_seconds.is_some());
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let fields = stat_fields("42 (a) b) c) S 1 2 3");
        assert_eq!(fields, ["S", "1", "2", "3"]);
    }
}
