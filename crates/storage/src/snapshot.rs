//! Whole-state export and import, for Raft snapshots: every state table's rows as raw bytes,
//! read in one read transaction and installed in one write transaction.

use halter_api::halter::{StateSnapshot, TableRows};
use redb::{ReadTransaction, ReadableTable, Value, WriteTransaction};

use crate::error::Result;
use crate::tables::*;

/// Every row of every state table, as seen by `txn`.
pub fn export(txn: &ReadTransaction) -> Result<StateSnapshot> {
    let mut snap = StateSnapshot::default();
    macro_rules! dump {
        ($def:ident) => {{
            let table = txn.open_table($def)?;
            let mut rows = TableRows {
                name: stringify!($def).to_string(),
                ..Default::default()
            };
            for row in table.iter()? {
                let (k, v) = row?;
                rows.keys.push(key_bytes(&$def, &k.value()));
                rows.values.push(value_bytes(&$def, &v.value()));
            }
            snap.tables.push(rows);
        }};
    }
    crate::for_each_table!(dump);
    Ok(snap)
}

/// Replaces the whole state with `snap`, inside `txn`.
pub fn import(txn: &WriteTransaction, snap: &StateSnapshot) -> Result<()> {
    macro_rules! load {
        ($def:ident) => {{
            let mut table = txn.open_table($def)?;
            table.retain(|_, _| false)?;
            if let Some(rows) = snap.tables.iter().find(|t| t.name == stringify!($def)) {
                for (k, v) in rows.keys.iter().zip(rows.values.iter()) {
                    insert_raw(&mut table, k, v)?;
                }
            }
        }};
    }
    crate::for_each_table!(load);
    Ok(())
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

    #[test]
    fn export_then_import_reproduces_the_state() {
        let a = Store::in_memory().unwrap();
        let txn = a.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn).unwrap();
            t.meta.insert("event_seq", 7).unwrap();
            t.timers
                .insert((5, "n/x/0/1"), [1u8, 2].as_slice())
                .unwrap();
            codec::put(
                &mut t.external_event_defs,
                "d",
                &halter_api::littlehorse::ExternalEventDef::default(),
            )
            .unwrap();
        }
        txn.commit().unwrap();
        let snap = export(&a.begin_read().unwrap()).unwrap();

        let b = Store::in_memory().unwrap();
        let txn = b.begin_write().unwrap();
        Tables::open(&txn).unwrap().meta.insert("junk", 1).unwrap();
        import(&txn, &snap).unwrap();
        txn.commit().unwrap();
        assert_eq!(
            digest(&a.begin_read().unwrap()).unwrap(),
            digest(&b.begin_read().unwrap()).unwrap(),
            "import replaces everything, including rows the snapshot does not have"
        );
    }
}
