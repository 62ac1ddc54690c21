//! Reading Nix's stderr on a thread of its own, in large stamped chunks.

use std::time::{Duration, Instant};

use crate::time::now_ms;

/// How much Nix's stderr pipe may hold: a large pipe lets Nix write on while the wrapper
/// is between reads. Linux lets any process raise it to 1 MiB.
const PIPE_SIZE: i32 = 1 << 20;
/// After a read this small, the reader waits a moment so the next read gets many lines
/// at once: a chatty build otherwise costs a read and a wake-up per line.
const SMALL_READ: usize = 16 << 10;
/// How long that moment is. Every read wakes the reader and then the supervisor, and on a
/// machine whose cores are all building those wake-ups are build time: on the
/// 200-derivation benchmark (2 cores, -j 2, 25 pairs) the wrapper cost 1.085-1.099x plain
/// `nix build` at 1 ms, 1.055-1.057x at 10 ms, 1.059x at 25 ms. Events are stamped on
/// arrival, so they may be stamped up to this much late.
const COALESCE: Duration = Duration::from_millis(10);

/// Bytes read from Nix's stderr, and when: the reader stamps them, so that the events
/// in them are timed by their arrival even if the supervisor is busy.
pub struct Chunk {
    pub read_at: Instant,
    pub read_at_ms: i64,
    pub bytes: Vec<u8>,
}

/// Reads Nix's stderr on its own thread, in large chunks, into a bounded channel (a
/// full channel makes Nix wait rather than the wrapper grow).
pub fn read_in_chunks(mut stderr: std::process::ChildStderr) -> tokio::sync::mpsc::Receiver<Chunk> {
    crate::sys::set_pipe_size(&stderr, PIPE_SIZE);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    // Without a reader thread the channel closes at once and the wrapper just waits
    // for Nix, which is still recorded.
    let _ = std::thread::Builder::new()
        .name("nix-ledger-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; PIPE_SIZE as usize];
            loop {
                match std::io::Read::read(&mut stderr, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let chunk = Chunk {
                            read_at: Instant::now(),
                            read_at_ms: now_ms(),
                            bytes: buf[..n].to_vec(),
                        };
                        if tx.blocking_send(chunk).is_err() {
                            return;
                        }
                        if n < SMALL_READ {
                            std::thread::sleep(COALESCE);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
            }
        });
    rx
}
