//! gzip at the pace of the cores, as pigz does it: the input is cut into
//! blocks that worker threads deflate at the same time, each primed with the
//! 32 KiB that precede it (so matches still reach back across the cut) and
//! ended with a sync flush (so it ends on a byte boundary and the next block
//! can follow it). The blocks, a final empty block and one trailer with the
//! CRC-32 combined from the blocks' CRCs make one ordinary gzip member that
//! any gunzip reads.
//!
//! A block that would not shrink (already compressed data: archives, media,
//! encrypted files) is written as stored blocks instead; a sample of it is
//! tried first, so such data costs a copy, not a compression.
//!
//! Memory is bounded: at most [`ParallelGzEncoder::max_pending`] blocks are
//! in flight, and `write` waits for the oldest before it starts another.

use flate2::{Compress, Compression, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per block.
pub const BLOCK_SIZE: usize = 256 * 1024;
/// Deflate's window: how far back a match may reach.
const WINDOW: usize = 32 * 1024;
/// Longest stored block deflate allows.
const MAX_STORED: usize = 65_535;
/// Most worker threads, whatever the host: beyond this the disk, not the
/// cores, sets the pace, and memory stays small.
const MAX_WORKERS: usize = 16;
/// Bytes of each sample slice tried before compressing a whole block.
const SAMPLE: usize = 4 * 1024;
/// The gzip header: deflate, no name, no mtime, fastest, Unix.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 3];
/// A final, empty, fixed-Huffman block: the end of the deflate stream.
const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

/// One block to deflate.
struct Job {
    data: Vec<u8>,
    /// Up to 32 KiB of input just before `data`.
    dict: Vec<u8>,
    reply: SyncSender<io::Result<Deflated>>,
}

/// A deflated block: byte-aligned, not final.
struct Deflated {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// A `Write` that gzips what it is given on worker threads. Call
/// [`ParallelGzEncoder::finish`] to write the end of the stream and get the
/// inner writer back; dropping it unfinished leaves a truncated stream.
pub struct ParallelGzEncoder<W: Write> {
    out: Option<W>,
    header_written: bool,
    block: Vec<u8>,
    dict: Vec<u8>,
    pending: VecDeque<Receiver<io::Result<Deflated>>>,
    max_pending: usize,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    crc: crc32fast::Hasher,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// An encoder at `level` with one worker per available core (at most 16).
    pub fn new(out: W, level: Compression) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_workers(out, level, cores)
    }

    /// An encoder at `level` with `workers` threads (at least one).
    pub fn with_workers(out: W, level: Compression, workers: usize) -> Self {
        let workers = workers.clamp(1, MAX_WORKERS);
        // Enough in flight to keep every worker busy while the oldest block
        // is written out; each costs about two blocks of memory.
        let max_pending = 2 * workers;
        let (jobs, queue) = sync_channel::<Job>(workers);
        let queue = Arc::new(Mutex::new(queue));
        let handles = (0..workers)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || work(&queue, level))
            })
            .collect();
        Self {
            out: Some(out),
            header_written: false,
            block: Vec::with_capacity(BLOCK_SIZE),
            dict: Vec::new(),
            pending: VecDeque::new(),
            max_pending,
            jobs: Some(jobs),
            workers: handles,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Most blocks in flight at once.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    fn out(&mut self) -> io::Result<&mut W> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        if !self.header_written {
            out.write_all(&HEADER)?;
            self.header_written = true;
        }
        Ok(out)
    }

    /// Hands the current block to the workers, after waiting for the oldest
    /// when enough are in flight.
    fn dispatch(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        while self.pending.len() >= self.max_pending {
            self.retire_oldest()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
        let next_dict = window_after(&self.dict, &data);
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let (reply, result) = sync_channel(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        jobs.send(Job { data, dict, reply })
            .map_err(|_| io::Error::other("gzip worker threads are gone"))?;
        self.pending.push_back(result);
        Ok(())
    }

    /// Writes out the oldest block in flight, waiting for it.
    fn retire_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.pending.pop_front() else {
            return Ok(());
        };
        let block = result
            .recv()
            .map_err(|_| io::Error::other("a gzip worker thread died"))??;
        self.crc.combine(&block.crc);
        self.out()?.write_all(&block.bytes)
    }

    /// Compresses what is left, writes the end of the stream (final block,
    /// CRC-32 and length) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch()?;
        while !self.pending.is_empty() {
            self.retire_oldest()?;
        }
        let crc = std::mem::take(&mut self.crc);
        let length = crc.total_len();
        let out = self.out()?;
        out.write_all(&LAST_BLOCK)?;
        out.write_all(&crc.finalize().to_le_bytes())?;
        // ISIZE is the input length modulo 2^32, as RFC 1952 says.
        out.write_all(&(length as u32).to_le_bytes())?;
        self.stop_workers();
        self.out
            .take()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    fn stop_workers(&mut self) {
        self.pending.clear();
        drop(self.jobs.take());
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK_SIZE - self.block.len();
        let n = buf.len().min(room);
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            self.dispatch()?;
        }
        Ok(n)
    }

    /// Compresses and writes out everything given so far (a sync point in
    /// the stream), then flushes the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        self.dispatch()?;
        while !self.pending.is_empty() {
            self.retire_oldest()?;
        }
        self.out()?.flush()
    }
}

impl<W: Write> Drop for ParallelGzEncoder<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// The last 32 KiB of `dict` followed by `data`.
fn window_after(dict: &[u8], data: &[u8]) -> Vec<u8> {
    if data.len() >= WINDOW {
        return data[data.len() - WINDOW..].to_vec();
    }
    let keep = WINDOW - data.len();
    let mut out = dict[dict.len().saturating_sub(keep)..].to_vec();
    out.extend_from_slice(data);
    out
}

/// A worker: deflates blocks from the queue until it closes.
fn work(queue: &Mutex<Receiver<Job>>, level: Compression) {
    let mut block = Compress::new(level, false);
    let mut sample = Compress::new(level, false);
    loop {
        let job = match queue.lock() {
            Ok(q) => match q.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.data);
        let bytes = if looks_incompressible(&mut sample, &job.data) {
            Ok(stored(&job.data))
        } else {
            deflate_block(&mut block, &job.data, &job.dict).map(|d| {
                if d.len() >= stored_len(job.data.len()) {
                    stored(&job.data)
                } else {
                    d
                }
            })
        };
        // The receiver is gone only when the encoder was dropped unfinished.
        let _ = job.reply.send(bytes.map(|bytes| Deflated { bytes, crc }));
    }
}

/// Raw deflate of `data` primed with `dict`, ended with a sync flush: not
/// final, ends on a byte boundary.
fn deflate_block(c: &mut Compress, data: &[u8], dict: &[u8]) -> io::Result<Vec<u8>> {
    c.reset();
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        let done = c.total_in() - start == data.len() as u64;
        // A sync flush is complete when all input is in and the compressor
        // did not fill the output.
        if done && out.len() < out.capacity() {
            return Ok(out);
        }
        if status == Status::BufError && !done && out.len() < out.capacity() {
            return Err(io::Error::other("deflate made no progress"));
        }
    }
}

/// True when slices from the start, the middle and the end of `data` all
/// fail to shrink: then the whole block is stored without trying.
fn looks_incompressible(c: &mut Compress, data: &[u8]) -> bool {
    if data.len() < 4 * SAMPLE {
        return false;
    }
    let mid = data.len() / 2 - SAMPLE / 2;
    let mut out = Vec::with_capacity(2 * SAMPLE);
    [0, mid, data.len() - SAMPLE].iter().all(|&at| {
        c.reset();
        out.clear();
        let slice = &data[at..at + SAMPLE];
        match c.compress_vec(slice, &mut out, FlushCompress::Finish) {
            // Anything short of a 2 % gain is not worth a compression.
            Ok(Status::StreamEnd) => out.len() * 100 >= slice.len() * 98,
            _ => false,
        }
    })
}

/// Length of `n` bytes as stored blocks.
fn stored_len(n: usize) -> usize {
    n + 5 * n.div_ceil(MAX_STORED).max(1)
}

/// `data` as non-final stored blocks (each starts on a byte boundary, which
/// the previous block left).
fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored_len(data.len()));
    for chunk in data.chunks(MAX_STORED) {
        let len = chunk.len() as u16;
        out.push(0); // BFINAL 0, BTYPE 00, padding to the byte boundary
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    /// Deterministic bytes: `text` compresses, `noise` does not.
    fn text(n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut i = 0u64;
        while out.len() < n {
            out.extend_from_slice(
                format!(
                    "{{\"tag\": \"plant/{}/line/{}\", \"value\": {}}}\n",
                    i % 17,
                    i % 5,
                    i
                )
                .as_bytes(),
            );
            i += 1;
        }
        out.truncate(n);
        out
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn gzip(data: &[u8], workers: usize, piece: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::with_workers(Vec::new(), Compression::new(1), workers);
        for p in data.chunks(piece.max(1)) {
            enc.write_all(p).unwrap();
        }
        enc.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // The one-member decoder: the output must be a single member.
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_through_a_standard_decoder() {
        for (name, data) in [
            ("empty", Vec::new()),
            ("one byte", vec![42]),
            ("text", text(3 * BLOCK_SIZE + 12345)),
            ("exactly one block", text(BLOCK_SIZE)),
            ("noise", noise(2 * BLOCK_SIZE + 7, 1)),
        ] {
            for workers in [1, 3] {
                let gz = gzip(&data, workers, 10_000);
                assert_eq!(gunzip(&gz), data, "{name}, {workers} worker(s)");
                let mut all = Vec::new();
                MultiGzDecoder::new(&gz[..]).read_to_end(&mut all).unwrap();
                assert_eq!(all, data, "{name}: trailing garbage after the member");
            }
        }
    }

    #[test]
    fn matches_reach_across_blocks() {
        // 20 KiB of noise, then the same again just after a block boundary:
        // only a block primed with the previous block's tail finds the
        // repeat. Compared with a second piece of different noise.
        let piece = noise(20 * 1024, 7);
        let build = |second: &[u8]| {
            let mut data = text(BLOCK_SIZE - piece.len());
            data.extend_from_slice(&piece);
            data.extend_from_slice(second);
            data.extend(text(BLOCK_SIZE / 2));
            data
        };
        let repeated = build(&piece);
        let different = build(&noise(piece.len(), 8));
        let (gz_repeated, gz_different) = (gzip(&repeated, 2, 65_536), gzip(&different, 2, 65_536));
        assert_eq!(gunzip(&gz_repeated), repeated);
        assert_eq!(gunzip(&gz_different), different);
        assert!(
            gz_repeated.len() + 15 * 1024 < gz_different.len(),
            "the repeat across the block boundary was not found: {} vs {} bytes",
            gz_repeated.len(),
            gz_different.len()
        );
    }

    #[test]
    fn incompressible_input_is_stored_not_inflated() {
        let data = noise(4 * BLOCK_SIZE, 3);
        let gz = gzip(&data, 2, 100_000);
        assert_eq!(gunzip(&gz), data);
        let overhead = gz.len() - data.len();
        assert!(
            overhead <= HEADER.len() + 10 + 5 * 4 * BLOCK_SIZE.div_ceil(MAX_STORED),
            "{overhead} bytes of overhead"
        );
    }

    #[test]
    fn compressible_input_shrinks() {
        let data = text(4 * BLOCK_SIZE);
        let gz = gzip(&data, 2, 4096);
        assert!(gz.len() * 4 < data.len(), "{} -> {}", data.len(), gz.len());
    }

    #[test]
    fn mixed_blocks_round_trip() {
        let mut data = Vec::new();
        for i in 0..6 {
            if i % 2 == 0 {
                data.extend(text(BLOCK_SIZE / 3 + i));
            } else {
                data.extend(noise(BLOCK_SIZE + 1000 * i, i as u64));
            }
        }
        assert_eq!(gunzip(&gzip(&data, 2, 777)), data);
    }

    #[test]
    fn flush_is_a_sync_point_and_the_stream_stays_one_member() {
        let mut enc = ParallelGzEncoder::with_workers(Vec::new(), Compression::new(1), 2);
        enc.write_all(b"first ").unwrap();
        enc.flush().unwrap();
        enc.write_all(b"second").unwrap();
        enc.flush().unwrap();
        enc.flush().unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz), b"first second");
    }

    #[test]
    fn dropping_unfinished_stops_the_workers() {
        let mut enc = ParallelGzEncoder::with_workers(Vec::new(), Compression::new(1), 2);
        enc.write_all(&text(5 * BLOCK_SIZE)).unwrap();
        drop(enc); // must return: workers joined, nothing blocks
    }

    #[test]
    fn a_failing_writer_fails_the_encoder() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut enc = ParallelGzEncoder::with_workers(Full, Compression::new(1), 2);
        let wrote = enc.write_all(&text(8 * BLOCK_SIZE));
        let err = match wrote {
            Err(e) => e,
            Ok(()) => enc.finish().err().expect("finish must fail"),
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
