//! The subset of JSONPath LittleHorse specs use: `$`, `.key`, `['key']`, `["key"]`, `[index]`.

use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Parses a path such as `$.customer.emails[0]`.
pub fn parse(path: &str) -> Result<Vec<Step>, String> {
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| format!("json path '{path}' must start with '$'"))?;
    let bytes = rest.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end] != b'.' && bytes[end] != b'[' {
                    end += 1;
                }
                if end == start {
                    return Err(format!("json path '{path}' has an empty key"));
                }
                steps.push(Step::Key(rest[start..end].to_string()));
                i = end;
            }
            b'[' => {
                let close = rest[i..]
                    .find(']')
                    .map(|c| i + c)
                    .ok_or_else(|| format!("json path '{path}' has an unclosed '['"))?;
                let inner = rest[i + 1..close].trim();
                let quoted = inner.len() >= 2
                    && ((inner.starts_with('\'') && inner.ends_with('\''))
                        || (inner.starts_with('"') && inner.ends_with('"')));
                if quoted {
                    steps.push(Step::Key(inner[1..inner.len() - 1].to_string()));
                } else {
                    let idx = inner
                        .parse::<usize>()
                        .map_err(|_| format!("json path '{path}' has a bad index '{inner}'"))?;
                    steps.push(Step::Index(idx));
                }
                i = close + 1;
            }
            _ => return Err(format!("json path '{path}' is not supported")),
        }
    }
    Ok(steps)
}

/// The value at `steps`, or `None` when the path does not exist.
pub fn get<'a>(root: &'a Json, steps: &[Step]) -> Option<&'a Json> {
    steps.iter().try_fold(root, |cur, step| match step {
        Step::Key(k) => cur.as_object()?.get(k),
        Step::Index(i) => cur.as_array()?.get(*i),
    })
}

/// Replaces the value at `steps` (creating a missing last key of an object).
pub fn set(root: &mut Json, steps: &[Step], value: Json) -> Result<(), String> {
    let Some((last, parents)) = steps.split_last() else {
        *root = value;
        return Ok(());
    };
    let mut cur = root;
    for step in parents {
        cur = match step {
            Step::Key(k) => cur
                .as_object_mut()
                .and_then(|o| o.get_mut(k))
                .ok_or_else(|| format!("json path: no key '{k}'"))?,
            Step::Index(i) => cur
                .as_array_mut()
                .and_then(|a| a.get_mut(*i))
                .ok_or_else(|| format!("json path: no index {i}"))?,
        };
    }
    match last {
        Step::Key(k) => {
            let obj = cur
                .as_object_mut()
                .ok_or_else(|| format!("json path: cannot set key '{k}' of a non-object"))?;
            obj.insert(k.clone(), value);
        }
        Step::Index(i) => {
            let slot = cur
                .as_array_mut()
                .and_then(|a| a.get_mut(*i))
                .ok_or_else(|| format!("json path: no index {i}"))?;
            *slot = value;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_reads_nested_paths() {
        let doc = json!({"a": {"b": [10, {"c": "x"}]}, "k y": 1});
        let steps = parse("$.a.b[1].c").unwrap();
        assert_eq!(get(&doc, &steps), Some(&json!("x")));
        assert_eq!(get(&doc, &parse("$['k y']").unwrap()), Some(&json!(1)));
        assert_eq!(get(&doc, &parse("$.a.missing").unwrap()), None);
        assert_eq!(get(&doc, &parse("$").unwrap()), Some(&doc));
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in ["a.b", "$.", "$[x]", "$[1", "$..a"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sets_values() {
        let mut doc = json!({"a": [1, 2]});
        set(&mut doc, &parse("$.a[1]").unwrap(), json!(5)).unwrap();
        set(&mut doc, &parse("$.b").unwrap(), json!("new")).unwrap();
        assert_eq!(doc, json!({"a": [1, 5], "b": "new"}));
        assert!(set(&mut doc, &parse("$.a[9]").unwrap(), json!(0)).is_err());
    }
}
