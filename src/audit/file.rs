//! The file sink: appends with fsync, rotation by size or UTC day, and
//! the rotated files' names. The chain runs on across files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::chain::{ChainEnd, resume};
use super::{AuditError, AuditKey};

/// Where lines go.
pub(super) enum Sink {
    /// A file, rotated by size or day; the chain runs on across files.
    File {
        file: File,
        path: PathBuf,
        len: u64,
        rotation: Rotation,
        /// UTC day (Unix days) the current file was started or resumed.
        day: i64,
    },
    /// Standard output (a collector ships it): flushed, not fsynced; each
    /// start begins a new chain.
    Stdout,
}

/// When the file sink starts a new file (by default, never).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rotation {
    /// Past this many bytes (0: never by size).
    pub max_bytes: u64,
    /// When the UTC day changes.
    pub daily: bool,
}

impl Sink {
    /// Appends `buf` durably; `last_seq` is the sequence of the last line
    /// already written (names a file rotated out before `buf`). On failure
    /// a file is cut back to its last committed length.
    pub(super) fn append(&mut self, buf: &[u8], today: i64, last_seq: u64) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Sink::File {
                file,
                path,
                len,
                rotation,
                day,
            } => {
                let due = *len > 0
                    && ((rotation.max_bytes > 0 && *len + buf.len() as u64 > rotation.max_bytes)
                        || (rotation.daily && today != *day));
                if due {
                    *file = rotate(path, last_seq)?;
                    *len = 0;
                    *day = today;
                }
                // At the committed length (a positioned write: no seek
                // call before each group's write).
                let r = file.write_all_at(buf, *len).and_then(|_| file.sync_data());
                match r {
                    Ok(()) => {
                        *len += buf.len() as u64;
                        Ok(())
                    }
                    Err(e) => {
                        let _ = file.set_len(*len);
                        Err(e)
                    }
                }
            }
        }
    }
}

/// The name a file gets when rotated out: its path plus the sequence of
/// its last line, zero-padded so names sort in chain order.
fn rotated_name(path: &Path, last_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{last_seq:020}"));
    PathBuf::from(name)
}

/// Files rotated out of `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let mut out: Vec<PathBuf> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let rest = name.strip_prefix(&prefix)?;
        (rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit())).then(|| dir.join(&name))
    })
    .collect();
    out.sort();
    out
}

/// Moves the full file aside and starts a new one at `path`. Never
/// overwrites a rotated file; if the new file cannot be made, the old one
/// is put back, so the writer's state stays true and a later batch retries.
fn rotate(path: &Path, last_seq: u64) -> std::io::Result<File> {
    let rotated = rotated_name(path, last_seq);
    if rotated.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists; not overwriting it", rotated.display()),
        ));
    }
    std::fs::rename(path, &rotated)?;
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::rename(&rotated, path);
            return Err(e);
        }
    };
    // Make the new names durable. The new file is in use either way: a
    // failure here is logged, not undone (undoing could lose lines).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(error = %e, "audit rotation: directory fsync failed");
    }
    tracing::info!(path = %path.display(), last_seq, "audit log rotated");
    Ok(file)
}

/// Opens the live file and finds where the chain stands: (file, length,
/// the chain's end).
pub(super) fn open_file(path: &Path, key: &AuditKey) -> Result<(File, u64, ChainEnd), AuditError> {
    let unavailable =
        |e: std::io::Error| AuditError::Unavailable(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(unavailable)?;
    let (mut end, len) = resume(&mut file, path, key)?;
    if len == 0
        && let Some(last) = rotated_files(path).pop()
    {
        // A new file after a rotation: the chain goes on from the last one.
        let mut old = File::open(&last).map_err(unavailable)?;
        (end, _) = resume(&mut old, &last, key)?;
    }
    Ok((file, len, end))
}
