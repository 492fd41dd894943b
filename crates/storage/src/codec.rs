//! Protobuf values in redb tables: the only place records are encoded and decoded.

use std::borrow::Borrow;

use prost::Message;
use redb::{Key, ReadableTable, Table};

use crate::error::{Result, StorageError};

/// Reads and decodes one record.
pub fn get<'k, K, M, T>(table: &T, key: impl Borrow<K::SelfType<'k>>) -> Result<Option<M>>
where
    K: Key + 'static,
    M: Message + Default,
    T: ReadableTable<K, &'static [u8]>,
{
    match table.get(key)? {
        None => Ok(None),
        Some(guard) => decode(guard.value()).map(Some),
    }
}

/// Encodes and writes one record.
pub fn put<'k, K, M>(
    table: &mut Table<'_, K, &'static [u8]>,
    key: impl Borrow<K::SelfType<'k>>,
    msg: &M,
) -> Result<()>
where
    K: Key + 'static,
    M: Message,
{
    let bytes = msg.encode_to_vec();
    table.insert(key, bytes.as_slice())?;
    Ok(())
}

/// Decodes a record's bytes.
pub fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|source| StorageError::Corrupt {
        table: std::any::type_name::<M>(),
        source,
    })
}
