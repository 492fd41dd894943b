//! A redb storage backend in memory that can lose what was not synced, for simulations and
//! tests: `crash()` throws away every write since the last `sync_data`, as a power cut would.
//! Without it, a simulated crash keeps everything (the real file system never forgets), and
//! durability bugs stay hidden.

use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

#[derive(Default)]
struct Disk {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Powered off: the dying process's last writes (destructors that flush) go nowhere.
    off: bool,
}

/// A simulated disk; clones share it (a node's process dies, its disk stays).
#[derive(Clone, Default)]
pub struct SimDisk(Arc<Mutex<Disk>>);

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.lock();
        f.debug_struct("SimDisk")
            .field("len", &d.current.len())
            .field("durable_len", &d.durable.len())
            .finish()
    }
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Power cut: every write since the last sync is lost, and whatever the dying process
    /// still writes (a database's close-on-drop flush) is discarded until [`SimDisk::power_on`].
    pub fn crash(&self) {
        let mut d = self.lock();
        d.current = d.durable.clone();
        d.off = true;
    }

    /// Power back, for the restarted process.
    pub fn power_on(&self) {
        self.lock().off = false;
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "read past the end of the disk",
    )
}

impl StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.lock().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let d = self.lock();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let src = d
            .current
            .get(start..start + out.len())
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let mut d = self.lock();
        if !d.off {
            d.current.resize(len, 0);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut d = self.lock();
        if d.off {
            return Ok(());
        }
        let Disk {
            current, durable, ..
        } = &mut *d;
        durable.clone_from(current);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut d = self.lock();
        if d.off {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start + data.len();
        if d.current.len() < end {
            d.current.resize(end, 0);
        }
        d.current[start..end].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, Tables};

    #[test]
    fn a_crash_loses_unsynced_commits_and_keeps_synced_ones() {
        let disk = SimDisk::new();
        let store = {
            let store = Store::with_backend(disk.clone()).unwrap();
            let txn = store.begin_write().unwrap();
            Tables::new(&txn)
                .meta
                .open_mut()
                .unwrap()
                .insert("durable", 1)
                .unwrap();
            txn.commit().unwrap();
            let mut txn = store.begin_write().unwrap();
            txn.set_durability(redb::Durability::None).unwrap();
            Tables::new(&txn)
                .meta
                .open_mut()
                .unwrap()
                .insert("volatile", 2)
                .unwrap();
            txn.commit().unwrap();
            store
        };
        // The crash comes first; the dying process's close-on-drop flush must not save it.
        disk.crash();
        drop(store);
        disk.power_on();
        let store = Store::with_backend(disk.clone()).unwrap();
        let txn = store.begin_read().unwrap();
        let t = crate::ReadTables::new(&txn);
        assert_eq!(
            t.meta().unwrap().get("durable").unwrap().map(|g| g.value()),
            Some(1)
        );
        assert_eq!(
            t.meta()
                .unwrap()
                .get("volatile")
                .unwrap()
                .map(|g| g.value()),
            None
        );
    }
}
