//! A write-ahead file for the Raft log: appended records, one `fdatasync` per append, on a
//! file whose blocks are allocated once.
//!
//! Why: a durable redb commit rewrites B-tree pages and the header in a file that grows, so its
//! `fdatasync` also writes file-system metadata; on the machines we measure that cost the
//! leader about 2 ms per appended entry, inside openraft's single core task. Overwriting blocks
//! that already exist costs a tenth of that. The Raft log keeps redb for lookups (written
//! without fsync) and makes an append durable here; see `halter_node::raft::log_store`.
//!
//! Layout: a 64-byte header (`MAGIC`, the generation, a CRC-32 of both), then records
//! `[len u32][generation u64][crc32 u32][payload]`, little-endian, the CRC over generation and
//! payload. [`Wal::reset`] starts a new generation at the start of the file: records of older
//! generations left behind are ignored, and [`Wal::records`] stops at the first record that is
//! short, of another generation or fails its CRC (a torn append, which was never
//! acknowledged). An unreadable header means no records: the header is only rewritten by a
//! reset, and a reset only follows the moment everything in the file was made durable elsewhere.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::sim_disk::SimDisk;

const MAGIC: &[u8; 8] = b"HALTWAL1";
const HEADER_LEN: u64 = 64;
const RECORD_HEADER_LEN: usize = 16;

/// What a WAL is written on: a file, or a simulated disk that loses unsynced writes.
pub trait WalDisk: Send + Sync + 'static {
    fn size(&self) -> io::Result<u64>;
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
}

impl WalDisk for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(out, offset)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

impl WalDisk for SimDisk {
    fn size(&self) -> io::Result<u64> {
        redb::StorageBackend::len(self).map_err(io::Error::other)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        redb::StorageBackend::read(self, offset, out).map_err(io::Error::other)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        redb::StorageBackend::write(self, offset, data).map_err(io::Error::other)
    }
    fn sync_data(&self) -> io::Result<()> {
        redb::StorageBackend::sync_data(self).map_err(io::Error::other)
    }
}

pub struct Wal {
    disk: Box<dyn WalDisk>,
    generation: u64,
    /// Where the next record goes.
    tail: u64,
    /// Size the file is filled to; a reset is due before an append would pass it.
    capacity: u64,
}

impl Wal {
    /// Opens the WAL on `disk`, first filling it with zeros up to `capacity` bytes when it is
    /// shorter (so that appends overwrite allocated blocks), and positions the tail after the
    /// last valid record. `zero_fill` is off for simulated disks, which are memory.
    pub fn open(disk: Box<dyn WalDisk>, capacity: u64, zero_fill: bool) -> io::Result<Self> {
        let len = disk.size()?;
        if zero_fill && len < capacity {
            let chunk = vec![0u8; 1 << 20];
            let mut at = len;
            while at < capacity {
                let n = (capacity - at).min(chunk.len() as u64) as usize;
                disk.write(at, &chunk[..n])?;
                at += n as u64;
            }
            disk.sync_data()?;
        }
        let mut wal = Self {
            disk,
            generation: 0,
            tail: HEADER_LEN,
            capacity: capacity.max(HEADER_LEN + 1),
        };
        match wal.read_header()? {
            Some(generation) => {
                wal.generation = generation;
                let (_, end) = wal.scan()?;
                wal.tail = end;
            }
            None => wal.reset()?,
        }
        Ok(wal)
    }

    fn read_header(&self) -> io::Result<Option<u64>> {
        if self.disk.size()? < HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; 20];
        self.disk.read(0, &mut h)?;
        if &h[..8] != MAGIC || crc32fast::hash(&h[..16]).to_le_bytes() != h[16..20] {
            return Ok(None);
        }
        Ok(Some(u64::from_le_bytes(
            h[8..16].try_into().unwrap_or_default(),
        )))
    }

    /// The payloads of every valid record of the current generation, in append order.
    pub fn records(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(self.scan()?.0)
    }

    fn scan(&self) -> io::Result<(Vec<Vec<u8>>, u64)> {
        let len = self.disk.size()?;
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        loop {
            if at + RECORD_HEADER_LEN as u64 > len {
                break;
            }
            let mut h = [0u8; RECORD_HEADER_LEN];
            self.disk.read(at, &mut h)?;
            let n = u64::from(u32::from_le_bytes(h[0..4].try_into().unwrap_or_default()));
            let generation = u64::from_le_bytes(h[4..12].try_into().unwrap_or_default());
            let crc = u32::from_le_bytes(h[12..16].try_into().unwrap_or_default());
            let start = at + RECORD_HEADER_LEN as u64;
            if generation != self.generation || start + n > len {
                break;
            }
            let mut payload = vec![0u8; n as usize];
            self.disk.read(start, &mut payload)?;
            if record_crc(generation, &payload) != crc {
                break;
            }
            out.push(payload);
            at = start + n;
        }
        Ok((out, at))
    }

    /// The current generation: records appended now carry it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether appending `payloads` would pass the capacity (then reset first).
    pub fn is_full_for(&self, payloads: &[impl AsRef<[u8]>]) -> bool {
        let size: u64 = payloads
            .iter()
            .map(|p| (RECORD_HEADER_LEN + p.as_ref().len()) as u64)
            .sum();
        self.tail > HEADER_LEN && self.tail + size > self.capacity
    }

    /// Appends the payloads as records and syncs: when this returns they survive a power cut.
    pub fn append(&mut self, payloads: &[impl AsRef<[u8]>]) -> io::Result<()> {
        let size: usize = payloads
            .iter()
            .map(|p| RECORD_HEADER_LEN + p.as_ref().len())
            .sum();
        let mut buf = Vec::with_capacity(size);
        for p in payloads {
            let p = p.as_ref();
            let n = u32::try_from(p.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "WAL record too big"))?;
            buf.extend_from_slice(&n.to_le_bytes());
            buf.extend_from_slice(&self.generation.to_le_bytes());
            buf.extend_from_slice(&record_crc(self.generation, p).to_le_bytes());
            buf.extend_from_slice(p);
        }
        self.disk.write(self.tail, &buf)?;
        self.disk.sync_data()?;
        self.tail += size as u64;
        Ok(())
    }

    /// Forgets every record: a new generation starts at the head of the file. Only once what
    /// the records held is durable elsewhere.
    pub fn reset(&mut self) -> io::Result<()> {
        self.reset_after(0)
    }

    /// [`Wal::reset`], to a generation above both the current one and `floor` (the last
    /// generation its owner recorded as absorbed, which a replaced file must not reuse).
    pub fn reset_after(&mut self, floor: u64) -> io::Result<()> {
        let generation = self.generation.max(floor).wrapping_add(1);
        let mut h = [0u8; HEADER_LEN as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&generation.to_le_bytes());
        let crc = crc32fast::hash(&h[..16]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        self.disk.write(0, &h)?;
        self.disk.sync_data()?;
        self.generation = generation;
        self.tail = HEADER_LEN;
        Ok(())
    }
}

fn record_crc(generation: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rec(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    /// Synced appends survive a power cut, in order; an append that was not synced is gone;
    /// and a later append after the crash continues the same generation.
    #[test]
    fn synced_records_survive_a_crash() {
        let disk = SimDisk::new();
        let mut wal = Wal::open(Box::new(disk.clone()), 4096, false).unwrap();
        wal.append(&[rec("a"), rec("bb")]).unwrap();
        wal.append(&[rec("ccc")]).unwrap();
        // A torn append: written, never synced.
        WalDisk::write(&disk, wal.tail, b"garbage that is not a record").unwrap();
        disk.crash();
        disk.power_on();
        let mut wal = Wal::open(Box::new(disk.clone()), 4096, false).unwrap();
        assert_eq!(
            wal.records().unwrap(),
            vec![rec("a"), rec("bb"), rec("ccc")]
        );
        wal.append(&[rec("d")]).unwrap();
        let wal = Wal::open(Box::new(disk), 4096, false).unwrap();
        assert_eq!(wal.records().unwrap().last(), Some(&rec("d")));
    }

    /// After a reset the old records are gone, even where the new ones are shorter and the
    /// old bytes still follow them on disk.
    #[test]
    fn reset_forgets_older_generations() {
        let disk = SimDisk::new();
        let mut wal = Wal::open(Box::new(disk.clone()), 4096, false).unwrap();
        wal.append(&[rec("old-1"), rec("old-2"), rec("old-3")])
            .unwrap();
        wal.reset().unwrap();
        wal.append(&[rec("new")]).unwrap();
        let wal = Wal::open(Box::new(disk), 4096, false).unwrap();
        assert_eq!(wal.records().unwrap(), vec![rec("new")]);
    }

    /// A record whose bytes were damaged ends the log there (its CRC fails).
    #[test]
    fn a_damaged_record_ends_the_log() {
        let disk = SimDisk::new();
        let mut wal = Wal::open(Box::new(disk.clone()), 4096, false).unwrap();
        wal.append(&[rec("one"), rec("two"), rec("three")]).unwrap();
        // Flip a byte of "two"'s payload: header 64, record one = 16 + 3, then 16 of header.
        let at = HEADER_LEN + 16 + 3 + 16;
        WalDisk::write(&disk, at, b"X").unwrap();
        let wal = Wal::open(Box::new(disk), 4096, false).unwrap();
        assert_eq!(wal.records().unwrap(), vec![rec("one")]);
    }

    #[test]
    fn reset_after_skips_past_the_floor() {
        let mut wal = Wal::open(Box::new(SimDisk::new()), 4096, false).unwrap();
        let g = wal.generation();
        wal.reset_after(g + 10).unwrap();
        assert_eq!(wal.generation(), g + 11);
        wal.reset_after(0).unwrap();
        assert_eq!(wal.generation(), g + 12);
    }

    #[test]
    fn fullness_is_reported_before_the_capacity_is_passed() {
        let disk = SimDisk::new();
        let mut wal = Wal::open(Box::new(disk), 200, false).unwrap();
        assert!(
            !wal.is_full_for(&[vec![0; 1000]]),
            "an empty WAL takes any append"
        );
        wal.append(&[vec![0; 50]]).unwrap();
        assert!(!wal.is_full_for(&[vec![0; 50]]));
        assert!(wal.is_full_for(&[vec![0; 60]]));
    }

    /// The file is filled to capacity once, so that later appends overwrite allocated blocks.
    #[test]
    fn a_new_file_is_filled_to_capacity() {
        let dir = std::env::temp_dir().join(format!("halter-wal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.wal");
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let mut wal = Wal::open(Box::new(open()), 3 << 20, true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
        wal.append(&[rec("kept")]).unwrap();
        drop(wal);
        let wal = Wal::open(Box::new(open()), 3 << 20, true).unwrap();
        assert_eq!(wal.records().unwrap(), vec![rec("kept")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
