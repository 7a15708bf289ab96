//! Reading the files mailflow is given, bounded: only regular files (a FIFO never ends and
//! blocks whoever opens it; a device such as `/dev/zero` never ends either), never more than
//! [`FILE_SIZE_LIMIT`] bytes, and text that is not rule text (control characters, not UTF-8)
//! refused without being kept, so no diagnostic can echo it. Every subcommand reads its
//! files through here.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// The largest rule file, `import rewrites` CSV file, message file or compiled artifact
/// mailflow reads: 128 MiB. A CSV of 1,000,000 rewrite entries is about 75 MB (`Entry 123456,
/// user123456@tenant12.example.com,user123456@example.com,,False`), so it fits with room to
/// spare, while a runaway file (a log written into the rules folder) is refused before it is
/// read: checking holds about 18 bytes per byte of rule text (BENCHMARKS.md).
pub const FILE_SIZE_LIMIT: u64 = 128 * 1024 * 1024;

/// What a file that is not a regular file is, for messages.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a named pipe (FIFO)"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

fn not_regular(ft: std::fs::FileType) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("it is {}, not a regular file", kind_of(ft)),
    )
}

/// Opens a file for reading only if it is a regular file. The type is checked before opening
/// (opening a FIFO for reading blocks until a writer comes), and again on the opened file,
/// which is opened non-blocking, so a file swapped for a FIFO in between cannot block either.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let ft = std::fs::metadata(path)?.file_type();
    if !ft.is_file() {
        return Err(not_regular(ft));
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = std::fs::File::from(fd);
    let ft = file.metadata()?.file_type();
    if !ft.is_file() {
        return Err(not_regular(ft));
    }
    Ok(file)
}

fn too_large(size: u64) -> Error {
    Error::new(
        ErrorKind::FileTooLarge,
        format!(
            "the file is {}, more than the {} MiB limit for files mailflow reads",
            human_size(size),
            FILE_SIZE_LIMIT / (1024 * 1024)
        ),
    )
}

/// Reads a whole regular file, refusing one larger than [`FILE_SIZE_LIMIT`] (by its size on
/// disk, and by what is actually read, for files that grow).
pub fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let on_disk = file.metadata()?.len();
    if on_disk > FILE_SIZE_LIMIT {
        return Err(too_large(on_disk));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(on_disk).unwrap_or(0));
    file.take(FILE_SIZE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_SIZE_LIMIT {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads at most [`FILE_SIZE_LIMIT`] bytes from a stream (standard input), refusing more.
pub fn read_stream_limited(input: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(FILE_SIZE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_SIZE_LIMIT {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Why bytes are not text mailflow reads (rule files, CSV, PowerShell), if they are not:
/// not UTF-8, or holding a control character other than tab, line feed, carriage return and
/// form feed (a NUL-separated `/proc/self/environ`, an executable, an image). The reason
/// never quotes the bytes, so reporting it cannot leak what the file holds.
pub fn not_text_reason(bytes: &[u8]) -> Option<String> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Some(format!(
                "it is not rule text: it is not valid UTF-8 (byte {})",
                e.valid_up_to() + 1
            ));
        }
    };
    text.char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c'))
        .map(|(i, c)| {
            format!(
                "it is not rule text: it holds the control character U+{:04X} (byte {})",
                u32::from(c),
                i + 1
            )
        })
}

/// [`read_limited`] for text: a file that is not text (see [`not_text_reason`]) is an error
/// of kind `InvalidData`, and its bytes are dropped.
pub fn read_limited_string(path: &Path) -> std::io::Result<String> {
    text_or_error(read_limited(path)?)
}

/// Bytes as text, or an `InvalidData` error that does not quote them.
pub fn text_or_error(bytes: Vec<u8>) -> std::io::Result<String> {
    if let Some(reason) = not_text_reason(&bytes) {
        return Err(Error::new(ErrorKind::InvalidData, reason));
    }
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidData, "not valid UTF-8"))
}

/// `1.5 GiB`, `200.0 MiB`, `12 KiB`: sizes in error messages.
fn human_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / (1024.0 * MIB))
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Returns at once (opening the FIFO would block until a writer came).
        let e = read_limited(&fifo).unwrap_err();
        assert!(
            e.to_string()
                .contains("named pipe (FIFO), not a regular file"),
            "{e}"
        );
        let e = read_limited(Path::new("/dev/zero")).unwrap_err();
        assert!(
            e.to_string().contains("a device, not a regular file"),
            "{e}"
        );
        let e = read_limited(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
    }

    #[test]
    fn binary_text_is_refused_without_quoting_it() {
        let r = not_text_reason(b"HOME=/root\0SECRET=hunter2\0").unwrap();
        assert!(r.contains("U+0000") && !r.contains("hunter2"), "{r}");
        let r = not_text_reason(b"caf\xe9 SECRET").unwrap();
        assert!(
            r.contains("not valid UTF-8") && !r.contains("SECRET"),
            "{r}"
        );
        assert_eq!(
            not_text_reason("rule \"x\" {\r\n\t}\x0c\n".as_bytes()),
            None
        );
    }
}
