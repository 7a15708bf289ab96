//! The tracking log's folder on disk: the live file `tracking.log` and the rotated files
//! `tracking-NNNNNNNNNN.log` (a sequence number, so oldest first is ascending), rotated by
//! size and age, kept under a total size and a maximum age by deleting the oldest, and never
//! written when the file system is short of the space the spool needs.
//!
//! Exchange bounds its message tracking log the same way (`MessageTrackingLogMaxFileSize`
//! 10 MB, `MaxDirectorySize` 1000 MB, `MaxAge` 30 days, a new file each day).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The live file's name in the folder.
pub const LIVE: &str = "tracking.log";

/// How the tracking log is bounded (`mailflow relay --tracking-log-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackLimits {
    /// The live file is rotated before it would grow past this (10 MB).
    pub max_file_size: u64,
    /// The live file is rotated once it is this old (1 day).
    pub max_file_age: Duration,
    /// The live file and the rotated files together stay under this (1000 MB): before the
    /// live file starts, the oldest rotated files are deleted until it can grow to
    /// `max_file_size` within it.
    pub max_directory_size: u64,
    /// Rotated files whose last event is older than this are deleted (30 days).
    pub max_age: Duration,
    /// Free space kept above what the spool needs to take a message of the largest size
    /// (its floor, 1.5x that size, plus the size): below it the log stops (default: the
    /// largest `max-message-size`).
    pub reserve: Option<u64>,
}

impl Default for TrackLimits {
    fn default() -> Self {
        TrackLimits {
            max_file_size: 10 << 20,
            max_file_age: Duration::from_secs(86_400),
            max_directory_size: 1000 << 20,
            max_age: Duration::from_secs(30 * 86_400),
            reserve: None,
        }
    }
}

impl TrackLimits {
    /// Why these limits cannot hold together, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.max_file_size == 0 {
            return Err("--tracking-log-max-file-size must be more than 0".into());
        }
        if self.max_directory_size < self.max_file_size {
            return Err(format!(
                "--tracking-log-max-directory-size ({} bytes) must be at least --tracking-log-max-file-size ({} bytes)",
                self.max_directory_size, self.max_file_size
            ));
        }
        Ok(())
    }
}

/// The tracking log's files are `tracking.log` and `tracking-N.log`; other logs kept the same
/// way (the captured traffic) have their own stem.
pub(crate) const TRACKING: &str = "tracking";

/// The live file's name of the log with this stem.
pub(crate) fn live_name(stem: &str) -> String {
    format!("{stem}.log")
}

/// The sequence number of a rotated file's name.
fn rotated_seq(stem: &str, name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(stem)?
        .strip_prefix('-')?
        .strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn rotated_name(stem: &str, seq: u64) -> String {
    format!("{stem}-{seq:010}.log")
}

/// The tracking log's rotated files in `dir`, oldest first.
pub fn rotated_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    rotated_files_of(dir, TRACKING)
}

/// The rotated files of the log with this stem in `dir`, oldest first.
pub fn rotated_files_of(dir: &Path, stem: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(|n| rotated_seq(stem, n))
        {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

struct Rotated {
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

struct Live {
    out: BufWriter<File>,
    len: u64,
    opened: SystemTime,
}

/// Free-space checks are made at least this often (in bytes written), so space another
/// process takes meanwhile is noticed within this much of the log's own writing.
const CHECK_EVERY: u64 = 64 * 1024;
/// While stopped, the free space is looked at again at most this often.
const RECHECK: Duration = Duration::from_secs(1);

/// The writer's side of the folder; owned by the tracking-log thread.
pub(crate) struct LogFiles {
    dir: PathBuf,
    stem: &'static str,
    limits: TrackLimits,
    /// No event is written while the file system has less free space than this: the spool's
    /// floor plus the reserve.
    stop_below: u64,
    live: Option<Live>,
    rotated: VecDeque<Rotated>,
    rotated_bytes: u64,
    next_seq: u64,
    /// Bytes that may still be written before the free space is looked at again.
    budget: u64,
    /// Since when nothing is written (short of space, or a write failed).
    stopped: Option<SystemTime>,
    /// Events dropped since the log stopped (for the line that says it resumed).
    dropped_now: u64,
    dropped: Arc<AtomicU64>,
}

fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl LogFiles {
    /// Opens the folder (creating it), takes stock of the rotated files, and applies the
    /// limits at once: a smaller cap or age than last time holds from the start.
    pub(crate) fn open(
        dir: &Path,
        limits: TrackLimits,
        stop_below: u64,
        dropped: Arc<AtomicU64>,
        now: SystemTime,
    ) -> std::io::Result<LogFiles> {
        LogFiles::open_named(dir, TRACKING, limits, stop_below, dropped, now)
    }

    /// As [`LogFiles::open`], for the log whose files are named after `stem`.
    pub(crate) fn open_named(
        dir: &Path,
        stem: &'static str,
        limits: TrackLimits,
        stop_below: u64,
        dropped: Arc<AtomicU64>,
        now: SystemTime,
    ) -> std::io::Result<LogFiles> {
        crate::queue::private_dir(dir)?;
        let mut rotated = VecDeque::new();
        let mut rotated_bytes = 0u64;
        let mut next_seq = 1;
        for path in rotated_files_of(dir, stem)? {
            let meta = std::fs::metadata(&path)?;
            if let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| rotated_seq(stem, n))
            {
                next_seq = next_seq.max(seq.saturating_add(1));
            }
            rotated_bytes += meta.len();
            rotated.push_back(Rotated {
                path,
                bytes: meta.len(),
                modified: meta.modified().unwrap_or(now),
            });
        }
        let mut files = LogFiles {
            dir: dir.to_path_buf(),
            stem,
            limits,
            stop_below,
            live: None,
            rotated,
            rotated_bytes,
            next_seq,
            budget: 0,
            stopped: None,
            dropped_now: 0,
            dropped,
        };
        let live = dir.join(live_name(stem));
        if let Ok(meta) = std::fs::metadata(&live) {
            let opened = meta.created().or_else(|_| meta.modified()).unwrap_or(now);
            if meta.len() > limits.max_file_size || age(opened, now) >= limits.max_file_age {
                files.rotate_file(&live, meta.len(), now)?;
            } else {
                files.live = Some(Live {
                    out: BufWriter::new(OpenOptions::new().append(true).open(&live)?),
                    len: meta.len(),
                    opened,
                });
            }
        }
        files.enforce(now);
        Ok(files)
    }

    /// Moves a log written by an earlier version (one file, `SPOOL/tracking.log`) into the
    /// folder as its oldest rotated file, so `mailflow track` still finds its events and the
    /// cap counts it.
    pub(crate) fn adopt(&mut self, old: &Path, now: SystemTime) -> std::io::Result<()> {
        let meta = std::fs::metadata(old)?;
        // It is older than anything in the folder: number 0 sorts first. (Should 0 be taken,
        // it goes last rather than overwrite anything.)
        let first = self.dir.join(rotated_name(self.stem, 0));
        if first.exists() {
            self.rotate_file(old, meta.len(), now)?;
        } else {
            std::fs::rename(old, &first)?;
            self.rotated_bytes += meta.len();
            self.rotated.push_front(Rotated {
                path: first,
                bytes: meta.len(),
                modified: meta.modified().unwrap_or(now),
            });
        }
        self.enforce(now);
        Ok(())
    }

    /// Appends one line (its newline included), rotating first when the live file would pass
    /// its size or has reached its age. Returns false when the line was dropped (counted).
    pub(crate) fn write(&mut self, line: &[u8], now: SystemTime) -> bool {
        let len = line.len() as u64;
        if !self.room_for(len, now) {
            self.drop_one();
            return false;
        }
        if let Some(live) = &self.live {
            if (live.len > 0 && live.len.saturating_add(len) > self.limits.max_file_size)
                || age(live.opened, now) >= self.limits.max_file_age
            {
                if let Err(e) = self.rotate(now) {
                    self.fail(&e, now);
                    self.drop_one();
                    return false;
                }
            }
        }
        if self.live.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .mode(crate::queue::PRIVATE)
                .open(self.dir.join(live_name(self.stem)))
            {
                Ok(f) => {
                    self.live = Some(Live {
                        out: BufWriter::new(f),
                        len: 0,
                        opened: now,
                    })
                }
                Err(e) => {
                    self.fail(&e, now);
                    self.drop_one();
                    return false;
                }
            }
        }
        let Some(live) = &mut self.live else {
            return false;
        };
        if let Err(e) = live.out.write_all(line) {
            self.fail(&e, now);
            self.drop_one();
            return false;
        }
        live.len += len;
        self.budget = self.budget.saturating_sub(len);
        true
    }

    /// Flushes what is buffered (a reader then sees every event written so far).
    pub(crate) fn flush(&mut self, now: SystemTime) {
        if let Some(live) = &mut self.live {
            if let Err(e) = live.out.flush() {
                self.fail(&e, now);
            }
        }
    }

    /// Rotation by age and deletion by age also happen when no event comes.
    pub(crate) fn tick(&mut self, now: SystemTime) {
        let old = self
            .live
            .as_ref()
            .is_some_and(|l| l.len > 0 && age(l.opened, now) >= self.limits.max_file_age);
        if old {
            if let Err(e) = self.rotate(now) {
                self.fail(&e, now);
            }
        }
        self.enforce(now);
    }

    /// Whether `len` more bytes may be written: the free space is looked at once per
    /// [`CHECK_EVERY`] bytes, and once a second while stopped.
    fn room_for(&mut self, len: u64, now: SystemTime) -> bool {
        if let Some(since) = self.stopped {
            if age(since, now) < RECHECK {
                return false;
            }
        }
        if self.budget >= len {
            return true;
        }
        let free = free_bytes(&self.dir).unwrap_or(0);
        let room = free.saturating_sub(self.stop_below);
        if room < len {
            if self.stopped.is_none() {
                tracing::error!(
                    "tracking log {}: stopped writing, {free} bytes free is under the spool's floor plus the reserve ({} bytes); dropped events are counted in mailflow_tracking_events_dropped_total",
                    self.dir.display(),
                    self.stop_below
                );
            }
            self.stopped = Some(now);
            self.budget = 0;
            return false;
        }
        if self.stopped.take().is_some() {
            tracing::warn!(
                "tracking log {}: writing again after {} events were dropped",
                self.dir.display(),
                self.dropped_now
            );
            self.dropped_now = 0;
        }
        self.budget = room.min(CHECK_EVERY);
        true
    }

    fn drop_one(&mut self) {
        self.dropped_now += 1;
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A write, flush or rename failed (the disk filled under us, an I/O error): logged
    /// once, the live file is given up, and writing resumes after [`RECHECK`].
    fn fail(&mut self, e: &std::io::Error, now: SystemTime) {
        if self.stopped.is_none() {
            tracing::error!(
                "tracking log {}: stopped writing: {e}; dropped events are counted in mailflow_tracking_events_dropped_total",
                self.dir.display()
            );
        }
        self.stopped = Some(now);
        self.budget = 0;
        if let Some(live) = self.live.take() {
            // What was buffered is lost with the file handle; the file keeps what it has.
            let (_file, _lost) = live.out.into_parts();
        }
    }

    fn rotate(&mut self, now: SystemTime) -> std::io::Result<()> {
        let Some(mut live) = self.live.take() else {
            return Ok(());
        };
        live.out.flush()?;
        drop(live);
        let path = self.dir.join(live_name(self.stem));
        let len = std::fs::metadata(&path).map(|m| m.len())?;
        self.rotate_file(&path, len, now)?;
        self.enforce(now);
        Ok(())
    }

    fn rotate_file(&mut self, from: &Path, bytes: u64, now: SystemTime) -> std::io::Result<()> {
        let to = self.dir.join(rotated_name(self.stem, self.next_seq));
        std::fs::rename(from, &to)?;
        self.next_seq += 1;
        self.rotated_bytes += bytes;
        self.rotated.push_back(Rotated {
            path: to,
            bytes,
            modified: now,
        });
        Ok(())
    }

    /// Deletes the oldest rotated files until the live file has room to grow to its limit
    /// under the folder's cap, and every rotated file older than the maximum age.
    fn enforce(&mut self, now: SystemTime) {
        let live_room = self.limits.max_file_size.max(
            self.live.as_ref().map_or(0, |l| l.len), // a live file kept from before a smaller limit
        );
        while let Some(oldest) = self.rotated.front() {
            let over =
                self.rotated_bytes.saturating_add(live_room) > self.limits.max_directory_size;
            let expired = age(oldest.modified, now) > self.limits.max_age;
            if !over && !expired {
                break;
            }
            match std::fs::remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!("tracking log: deleting {}: {e}", oldest.path.display());
                    break;
                }
            }
            self.rotated_bytes = self.rotated_bytes.saturating_sub(oldest.bytes);
            self.rotated.pop_front();
        }
    }
}

fn age(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, limits: TrackLimits, now: SystemTime) -> LogFiles {
        LogFiles::open(dir, limits, 0, Arc::default(), now).unwrap()
    }

    fn sizes(dir: &Path) -> (usize, u64) {
        let mut n = 0;
        let mut total = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            n += 1;
            total += e.unwrap().metadata().unwrap().len();
        }
        (n, total)
    }

    #[test]
    fn rotates_by_size_and_keeps_the_folder_under_its_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = TrackLimits {
            max_file_size: 1000,
            max_directory_size: 4500,
            ..TrackLimits::default()
        };
        let now = SystemTime::now();
        let mut f = files(tmp.path(), limits, now);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..1000 {
            assert!(f.write(&line, now));
            let (_, total) = sizes(tmp.path());
            assert!(total <= 4500, "{total}");
        }
        f.flush(now);
        let rotated = rotated_files(tmp.path()).unwrap();
        // 1000 lines of 100 bytes: 100 files written, the newest 3 kept beside the live one.
        assert_eq!(rotated.len(), 3, "{rotated:?}");
        assert!(
            rotated[0].ends_with("tracking-0000000097.log"),
            "{rotated:?}"
        );
        for r in &rotated {
            assert_eq!(std::fs::metadata(r).unwrap().len(), 1000);
        }
    }

    #[test]
    fn rotates_by_age_and_deletes_what_is_older_than_the_maximum_age() {
        let tmp = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let limits = TrackLimits {
            max_file_age: day,
            max_age: 3 * day,
            ..TrackLimits::default()
        };
        let t0 = SystemTime::UNIX_EPOCH + 20_000 * day;
        let mut f = files(tmp.path(), limits, t0);
        for d in 0..6u32 {
            let now = t0 + d * day + Duration::from_secs(60);
            assert!(f.write(format!("day {d}\n").as_bytes(), now));
            f.flush(now);
            f.tick(now);
        }
        // Days 0-4 were rotated as each next day began; a rotated file is dated when it is
        // rotated, and those rotated more than 3 days before day 5 are gone.
        let kept: Vec<String> = rotated_files(tmp.path())
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(kept, ["day 1\n", "day 2\n", "day 3\n", "day 4\n"]);
        let live = std::fs::read_to_string(tmp.path().join(LIVE)).unwrap();
        assert_eq!(live, "day 5\n");
        // A tick alone rotates a day-old file and expires old ones.
        f.tick(t0 + 9 * day);
        assert!(rotated_files(tmp.path()).unwrap().len() == 1);
        assert!(!tmp.path().join(LIVE).exists());
    }

    #[test]
    fn writes_nothing_below_the_floor_plus_the_reserve_and_counts_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let now = SystemTime::now();
        let mut f = LogFiles::open(
            tmp.path(),
            TrackLimits::default(),
            u64::MAX,
            Arc::clone(&dropped),
            now,
        )
        .unwrap();
        for i in 0..100u32 {
            assert!(!f.write(b"event\n", now + Duration::from_millis(u64::from(i) * 20)));
        }
        f.flush(now);
        assert_eq!(dropped.load(Ordering::Relaxed), 100);
        assert!(!tmp.path().join(LIVE).exists());
    }

    #[test]
    fn the_single_file_of_earlier_versions_becomes_the_oldest() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join(LIVE);
        std::fs::write(&old, "old event\n").unwrap();
        let dir = tmp.path().join("tracking");
        let now = SystemTime::now();
        let limits = TrackLimits {
            max_file_size: 10,
            ..TrackLimits::default()
        };
        let mut f = files(&dir, limits, now);
        f.write(b"new one\n", now);
        f.write(b"new two\n", now);
        f.adopt(&old, now).unwrap();
        f.flush(now);
        assert!(!old.exists());
        let texts: Vec<String> = rotated_files(&dir)
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(texts, ["old event\n", "new one\n"]);
    }

    #[test]
    fn a_smaller_cap_holds_from_the_start_and_sequence_numbers_go_on() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let big = TrackLimits {
            max_file_size: 100,
            max_directory_size: 10_000,
            ..TrackLimits::default()
        };
        let mut f = files(tmp.path(), big, now);
        for _ in 0..50 {
            f.write(&[b'y'; 50], now);
        }
        f.flush(now);
        drop(f);
        assert_eq!(rotated_files(tmp.path()).unwrap().len(), 24);
        let small = TrackLimits {
            max_directory_size: 300,
            ..big
        };
        let mut f = files(tmp.path(), small, now);
        assert!(sizes(tmp.path()).1 <= 300);
        f.write(&[b'z'; 100], now);
        f.write(&[b'z'; 100], now);
        f.flush(now);
        // The live file kept from before was rotated as 25, the first new one as 26; the
        // cap leaves room for these two only.
        let rotated = rotated_files(tmp.path()).unwrap();
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        assert!(
            rotated[0].ends_with("tracking-0000000025.log"),
            "{rotated:?}"
        );
        assert!(
            rotated[1].ends_with("tracking-0000000026.log"),
            "{rotated:?}"
        );
    }
}
