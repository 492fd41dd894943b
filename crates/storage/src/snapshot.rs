//! Whole-state export and import, for Raft snapshots, streamed so that a node's memory does not
//! grow with its data: rows are read in one read transaction and written out in chunks, and
//! installed in one write transaction while they are read back.
//!
//! Format (version 1), all integers big-endian:
//!
//! ```text
//! "HALTSNAP" u32:version
//! u32:len meta[len]                       opaque to this crate (the node's Raft snapshot meta)
//! { u32:len TableRows[len] }*             protobuf halter.TableRows, at most CHUNK_ROWS rows each
//! u32:0 u64:total_rows                    end marker: a truncated stream is an error, not a
//!                                         smaller state
//! ```
//!
//! Chunks are versioned protobuf like the log, so a newer node can read an older snapshot.

use std::io::{Read, Write};

use halter_api::halter::TableRows;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, Value, WriteTransaction};

use crate::error::{Result, StorageError};
use crate::tables::*;

const MAGIC: &[u8; 8] = b"HALTSNAP";
const FORMAT_VERSION: u32 = 1;
/// Rows per chunk, and a byte bound so a chunk of large rows stays small.
const CHUNK_ROWS: usize = 1024;
const CHUNK_BYTES: usize = 1024 * 1024;
/// Bigger than any chunk or meta this code writes; a larger length means a corrupt stream.
const MAX_FRAME: u32 = 256 * 1024 * 1024;

fn bad(msg: impl Into<String>) -> StorageError {
    StorageError::Snapshot(msg.into())
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| bad("frame over 4 GiB"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

fn read_u32(input: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_frame(input: &mut impl Read, len: u32) -> Result<Vec<u8>> {
    if len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes `meta` and every row of every state table as seen by `txn`; returns the row count.
pub fn write(txn: &ReadTransaction, meta: &[u8], out: &mut impl Write) -> Result<u64> {
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_be_bytes())?;
    write_frame(out, meta)?;
    let mut total = 0u64;
    let mut buf = Vec::new();
    let mut flush = |rows: &mut TableRows, out: &mut dyn Write| -> Result<()> {
        if !rows.keys.is_empty() {
            buf.clear();
            rows.encode(&mut buf).map_err(|e| bad(e.to_string()))?;
            write_frame(&mut &mut *out, &buf)?;
            rows.keys.clear();
            rows.values.clear();
        }
        Ok(())
    };
    macro_rules! dump {
        ($def:ident) => {{
            let table = txn.open_table($def)?;
            let mut rows = TableRows {
                name: stringify!($def).to_string(),
                ..Default::default()
            };
            let mut bytes = 0;
            for row in table.iter()? {
                let (k, v) = row?;
                let (k, v) = (key_bytes(&$def, &k.value()), value_bytes(&$def, &v.value()));
                bytes += k.len() + v.len();
                rows.keys.push(k);
                rows.values.push(v);
                total += 1;
                if rows.keys.len() >= CHUNK_ROWS || bytes >= CHUNK_BYTES {
                    flush(&mut rows, out)?;
                    bytes = 0;
                }
            }
            flush(&mut rows, out)?;
        }};
    }
    crate::for_each_table!(dump);
    out.write_all(&0u32.to_be_bytes())?;
    out.write_all(&total.to_be_bytes())?;
    Ok(total)
}

/// Reads the header of a snapshot stream and returns its meta; `input` is left at the rows.
pub fn read_meta(input: &mut impl Read) -> Result<Vec<u8>> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad("not a Halter snapshot"));
    }
    let version = read_u32(input)?;
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "snapshot format {version}, this node reads {FORMAT_VERSION}"
        )));
    }
    let len = read_u32(input)?;
    read_frame(input, len)
}

/// Replaces the whole state, inside `txn`, with the rows of a stream positioned after its
/// header (see [`read_meta`]); returns the row count. On error `txn` must be dropped.
pub fn read_rows(txn: &WriteTransaction, input: &mut impl Read) -> Result<u64> {
    macro_rules! clear {
        ($def:ident) => {{
            txn.open_table($def)?.retain(|_, _| false)?;
        }};
    }
    crate::for_each_table!(clear);
    let mut total = 0u64;
    loop {
        let len = read_u32(input)?;
        if len == 0 {
            let mut b = [0u8; 8];
            input.read_exact(&mut b)?;
            let expected = u64::from_be_bytes(b);
            if expected != total {
                return Err(bad(format!("{total} rows read, {expected} written")));
            }
            return Ok(total);
        }
        let rows = TableRows::decode(read_frame(input, len)?.as_slice())
            .map_err(|e| bad(format!("chunk: {e}")))?;
        if rows.keys.len() != rows.values.len() {
            return Err(bad(format!("chunk of {} with uneven rows", rows.name)));
        }
        let mut known = false;
        macro_rules! load {
            ($def:ident) => {{
                if !known && rows.name == stringify!($def) {
                    known = true;
                    let mut table = txn.open_table($def)?;
                    for (k, v) in rows.keys.iter().zip(rows.values.iter()) {
                        insert_raw(&mut table, k, v)?;
                    }
                }
            }};
        }
        crate::for_each_table!(load);
        if !known {
            return Err(bad(format!("unknown table {}", rows.name)));
        }
        total += rows.keys.len() as u64;
    }
}

fn insert_raw<K: redb::Key + 'static, V: Value + 'static>(
    table: &mut redb::Table<'_, K, V>,
    k: &[u8],
    v: &[u8],
) -> Result<()> {
    let key = K::from_bytes(k);
    let value = V::from_bytes(v);
    table.insert(key, value)?;
    Ok(())
}

pub(crate) fn key_bytes<'a, K: redb::Key + 'static, V: Value + 'static>(
    _def: &redb::TableDefinition<K, V>,
    k: &'a K::SelfType<'a>,
) -> Vec<u8> {
    K::as_bytes(k).as_ref().to_vec()
}

pub(crate) fn value_bytes<'a, K: redb::Key + 'static, V: Value + 'static>(
    _def: &redb::TableDefinition<K, V>,
    v: &'a V::SelfType<'a>,
) -> Vec<u8> {
    V::as_bytes(v).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{codec, digest::digest, Store, Tables};

    /// A state with more rows than one chunk holds, in several tables.
    fn sample() -> Store {
        let a = Store::in_memory().unwrap();
        let txn = a.begin_write().unwrap();
        {
            let mut t = Tables::new(&txn);
            t.meta.open_mut().unwrap().insert("event_seq", 7).unwrap();
            for i in 0..(CHUNK_ROWS as i64 * 2 + 5) {
                let id = format!("n/x/0/{i}");
                t.timers
                    .open_mut()
                    .unwrap()
                    .insert((i, id.as_str()), [1u8, 2].as_slice())
                    .unwrap();
            }
            codec::put(
                t.external_event_defs.open_mut().unwrap(),
                "d",
                &halter_api::littlehorse::ExternalEventDef::default(),
            )
            .unwrap();
        }
        txn.commit().unwrap();
        a
    }

    fn install(bytes: &[u8]) -> Result<(Store, Vec<u8>, u64)> {
        let b = Store::in_memory().unwrap();
        let txn = b.begin_write().unwrap();
        Tables::new(&txn)
            .meta
            .open_mut()
            .unwrap()
            .insert("junk", 1)
            .unwrap();
        let mut input = bytes;
        let meta = read_meta(&mut input)?;
        let rows = read_rows(&txn, &mut input)?;
        txn.commit().unwrap();
        Ok((b, meta, rows))
    }

    #[test]
    fn write_then_read_reproduces_the_state() {
        let a = sample();
        let mut bytes = Vec::new();
        let written = write(&a.begin_read().unwrap(), b"meta!", &mut bytes).unwrap();
        assert_eq!(written, CHUNK_ROWS as u64 * 2 + 5 + 2);
        let (b, meta, read) = install(&bytes).unwrap();
        assert_eq!(meta, b"meta!");
        assert_eq!(read, written);
        assert_eq!(
            digest(&a.begin_read().unwrap()).unwrap(),
            digest(&b.begin_read().unwrap()).unwrap(),
            "import replaces everything, including rows the snapshot does not have"
        );
    }

    #[test]
    fn a_truncated_or_foreign_stream_is_an_error() {
        let mut bytes = Vec::new();
        write(&sample().begin_read().unwrap(), b"m", &mut bytes).unwrap();
        // Cut inside the rows, and cut exactly after a chunk (before the end marker).
        assert!(install(&bytes[..bytes.len() / 2]).is_err());
        assert!(install(&bytes[..bytes.len() - 12]).is_err());
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(install(&other).is_err());
    }
}
