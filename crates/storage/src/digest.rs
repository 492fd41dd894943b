//! A digest over every state table: two replicas that applied the same entries must produce the
//! same digest. Simulations and property tests compare them.

use redb::{ReadTransaction, ReadableTable};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::snapshot::{key_bytes, value_bytes};
use crate::tables::*;

/// SHA-256 over every table's name, then each (key, value) pair's raw bytes in key order.
pub fn digest(txn: &ReadTransaction) -> Result<String> {
    let mut hasher = Sha256::new();
    macro_rules! hash_table {
        ($def:ident) => {{
            let table = txn.open_table($def)?;
            hasher.update(stringify!($def).as_bytes());
            for row in table.iter()? {
                let (k, v) = row?;
                hash_bytes(&mut hasher, key_bytes(&$def, &k.value()).as_ref());
                hash_bytes(&mut hasher, value_bytes(&$def, &v.value()).as_ref());
            }
        }};
    }
    crate::for_each_table!(hash_table);
    Ok(hex::encode(hasher.finalize()))
}

fn hash_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}
