//! Copies one file from the stick into staging while hashing it in the same pass, never reading
//! more than the manifest's size (plus one byte, to notice a longer file). What is hashed is
//! exactly what is written: a file changed on the stick after the signature check cannot slip
//! into the store (RAUC's CVE-2020-25860 was a bundle swapped between check and install).

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest, Sha256};

/// Size of one read (large reads keep a USB stick's throughput up).
pub const CHUNK: usize = 4 << 20;

/// How a copy ended badly.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the file ends after {got} of {expected} bytes")]
    Truncated { expected: u64, got: u64 },
    #[error("the file is longer than {expected} bytes")]
    TooLong { expected: u64 },
    #[error("reading")]
    Read(#[source] io::Error),
    #[error("writing")]
    Write(#[source] io::Error),
}

/// Buffers in flight between the reading-and-hashing thread and the writing one.
const DEPTH: usize = 4;

/// Copies exactly `size` bytes of `src` to `dst` and returns their SHA-256 (the caller fsyncs
/// a file `dst`). Reading and hashing run on this thread while another writes, so the copy
/// takes about as long as the slower of the two rather than their sum. `progress` is told the
/// bytes read and hashed so far after each chunk.
pub fn copy_hashed(
    src: &mut File,
    dst: &mut (dyn Write + Send),
    size: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 32], CopyError> {
    // Tell the kernel to read ahead aggressively; a failure only costs speed.
    let _ = nix::fcntl::posix_fadvise(
        &*src,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(DEPTH);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(DEPTH + 1);
        for _ in 0..=DEPTH {
            empty_tx
                .send(vec![0u8; CHUNK])
                .expect("the channel has room for every buffer");
        }
        let writer = scope.spawn(move || -> io::Result<()> {
            for (buf, n) in full_rx {
                dst.write_all(&buf[..n])?;
                // The reader may have stopped: then the buffer is simply dropped.
                let _ = empty_tx.send(buf);
            }
            Ok(())
        });
        let read = read_and_hash(src, size, progress, &empty_rx, &full_tx);
        drop(full_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked")));
        match (read, written) {
            (Err(ReadEnd::Failed(e)), _) => Err(e),
            (_, Err(e)) => Err(CopyError::Write(e)),
            (Err(ReadEnd::WriterGone), Ok(())) => {
                Err(CopyError::Write(io::Error::other("the writer stopped")))
            }
            (Ok(digest), Ok(())) => Ok(digest),
        }
    })
}

enum ReadEnd {
    Failed(CopyError),
    /// The writer stopped (its error is the one to report).
    WriterGone,
}

fn read_and_hash(
    src: &mut File,
    size: u64,
    progress: &mut dyn FnMut(u64),
    empty: &Receiver<Vec<u8>>,
    full: &SyncSender<(Vec<u8>, usize)>,
) -> Result<[u8; 32], ReadEnd> {
    let mut hasher = Sha256::new();
    let mut done: u64 = 0;
    while done < size {
        let mut buf = empty.recv().map_err(|_| ReadEnd::WriterGone)?;
        let want = usize::try_from((size - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut n = 0;
        // Fill the chunk (or reach the end of the file) so writes stay large.
        while n < want {
            match src.read(&mut buf[n..want]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadEnd::Failed(CopyError::Read(e))),
            }
        }
        if n == 0 {
            return Err(ReadEnd::Failed(CopyError::Truncated {
                expected: size,
                got: done,
            }));
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        full.send((buf, n)).map_err(|_| ReadEnd::WriterGone)?;
        progress(done);
    }
    let mut extra = [0u8; 1];
    loop {
        match src.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => return Err(ReadEnd::Failed(CopyError::TooLong { expected: size })),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadEnd::Failed(CopyError::Read(e))),
        }
    }
    Ok(hasher.finalize().into())
}

/// SHA-256 and length of a whole file (used by `create` and by the store's self-check).
pub fn hash_file(f: &mut File) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().into(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(content: &[u8]) -> (tempfile::TempDir, File, File) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("src"), content).unwrap();
        let src = File::open(t.path().join("src")).unwrap();
        let dst = File::create(t.path().join("dst")).unwrap();
        (t, src, dst)
    }

    #[test]
    fn the_copy_is_exact_and_its_hash_is_sha256() {
        let content: Vec<u8> = (0..CHUNK * 2 + 17).map(|i| (i * 7) as u8).collect();
        let (t, mut src, mut dst) = files(&content);
        let mut seen = Vec::new();
        let digest = copy_hashed(&mut src, &mut dst, content.len() as u64, &mut |d| {
            seen.push(d)
        })
        .unwrap();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&content)));
        assert_eq!(std::fs::read(t.path().join("dst")).unwrap(), content);
        assert_eq!(seen.last(), Some(&(content.len() as u64)));
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn short_and_long_sources_are_refused() {
        let (_t, mut src, mut dst) = files(b"0123456789");
        assert!(matches!(
            copy_hashed(&mut src, &mut dst, 11, &mut |_| {}),
            Err(CopyError::Truncated {
                expected: 11,
                got: 10
            })
        ));
        let (t, mut src, mut dst) = files(b"0123456789");
        assert!(matches!(
            copy_hashed(&mut src, &mut dst, 9, &mut |_| {}),
            Err(CopyError::TooLong { expected: 9 })
        ));
        // Never more than the size plus the one byte that tells.
        assert_eq!(std::fs::read(t.path().join("dst")).unwrap().len(), 9);
    }

    #[test]
    fn a_failing_destination_is_reported_as_a_write_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let content = vec![7u8; CHUNK * 3];
        let (_t, mut src, _) = files(&content);
        match copy_hashed(&mut src, &mut Full, content.len() as u64, &mut |_| {}) {
            Err(CopyError::Write(e)) => assert_eq!(e.raw_os_error(), Some(28)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_endless_source_stops_at_the_manifest_size() {
        let t = tempfile::tempdir().unwrap();
        let mut src = File::open("/dev/zero").unwrap();
        let mut dst = File::create(t.path().join("dst")).unwrap();
        assert!(matches!(
            copy_hashed(&mut src, &mut dst, 3 * CHUNK as u64, &mut |_| {}),
            Err(CopyError::TooLong { .. })
        ));
    }
}
