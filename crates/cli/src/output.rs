//! Output for people (tables, `key  value` views) and for scripts (`-o json`, one JSON document).

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(o) if o.len() == 1 => o.values().next().map(cell).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// A single object: one `field  value` line per top-level field.
pub fn object(v: &Value) -> String {
    let Value::Object(map) = v else {
        return v.to_string();
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    map.iter()
        .map(|(k, v)| format!("{k:width$}  {}", cell(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A list of objects as a table whose columns are the union of their top-level fields.
pub fn table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "(none)".to_string();
    }
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        if let Value::Object(m) = r {
            for k in m.keys() {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| r.get(c).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<&str>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(
        cols.iter()
            .map(|c| c.to_uppercase())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    )];
    for r in &cells {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_flatten_single_field_objects() {
        let t = table(&[
            json!({"id": {"name": "a"}, "n": 1}),
            json!({"id": {"name": "bbb"}}),
        ]);
        assert_eq!(t, "ID   N\na    1\nbbb");
        assert_eq!(table(&[]), "(none)");
    }

    #[test]
    fn objects_list_fields() {
        assert_eq!(
            object(&json!({"status": "RUNNING", "id": {"id": "x"}})),
            "id      x\nstatus  RUNNING"
        );
    }
}
