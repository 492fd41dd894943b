//! Evaluating `VariableAssignment`s and comparisons: the values a spec computes from variables,
//! literals and node outputs. Failures are workflow failures (`VAR_SUB_ERROR`), not rejections.

use halter_api::littlehorse::{
    variable_assignment::{self, expression, Source},
    variable_value::Value,
    Comparator, VariableAssignment, VariableMutationType, VariableValue,
};
use halter_api::{limits::MAX_ASSIGNMENT_DEPTH, values};
use serde_json::Value as Json;

use crate::json_path;

/// Where an assignment reads from.
pub trait Scope {
    /// The current value of a variable visible to the thread, `None` if no such variable.
    fn variable(&mut self, name: &str) -> Result<Option<VariableValue>, String>;
    /// The output of the latest NodeRun of `node_name` in the thread, `None` if it never ran.
    fn node_output(&mut self, node_name: &str) -> Result<Option<VariableValue>, String>;
}

/// A value as JSON, for paths and collection operations.
pub fn to_json(v: &VariableValue) -> Result<Json, String> {
    Ok(match &v.value {
        None => Json::Null,
        Some(Value::JsonObj(s)) | Some(Value::JsonArr(s)) => {
            serde_json::from_str(s).map_err(|e| format!("stored JSON is invalid: {e}"))?
        }
        Some(Value::Str(s)) => Json::String(s.clone()),
        Some(Value::Int(i)) => Json::from(*i),
        Some(Value::Double(d)) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Some(Value::Bool(b)) => Json::Bool(*b),
        Some(other) => return Err(format!("{} values have no JSON form", kind_name(other))),
    })
}

/// A JSON value as the matching `VariableValue`.
pub fn from_json(j: &Json) -> VariableValue {
    match j {
        Json::Null => values::null(),
        Json::Bool(b) => values::boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => values::int(i),
            None => values::double(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => values::str(s.clone()),
        Json::Array(_) => values::json_arr(j.to_string()),
        Json::Object(_) => values::json_obj(j.to_string()),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::JsonObj(_) => "JSON_OBJ",
        Value::JsonArr(_) => "JSON_ARR",
        Value::Double(_) => "DOUBLE",
        Value::Bool(_) => "BOOL",
        Value::Str(_) => "STR",
        Value::Int(_) => "INT",
        Value::Bytes(_) => "BYTES",
        Value::WfRunId(_) => "WF_RUN_ID",
        Value::UtcTimestamp(_) => "TIMESTAMP",
        Value::Struct(_) => "STRUCT",
        Value::Array(_) => "ARRAY",
        Value::Map(_) => "MAP",
    }
}

/// Applies a JSONPath to a JSON_OBJ or JSON_ARR value.
pub fn select(v: &VariableValue, path: &str) -> Result<VariableValue, String> {
    let steps = json_path::parse(path)?;
    match &v.value {
        Some(Value::JsonObj(_)) | Some(Value::JsonArr(_)) => {
            let doc = to_json(v)?;
            json_path::get(&doc, &steps)
                .map(from_json)
                .ok_or_else(|| format!("json path '{path}' matched nothing"))
        }
        _ => Err(format!(
            "json path '{path}' applied to a {} value",
            values::type_name(values::type_of(v))
        )),
    }
}

/// The string form used by format strings and string concatenation.
pub fn display(v: &VariableValue) -> String {
    match &v.value {
        None => "null".to_string(),
        Some(Value::Str(s)) | Some(Value::JsonObj(s)) | Some(Value::JsonArr(s)) => s.clone(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Double(d)) => d.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::WfRunId(id)) => halter_api::wf_run_id::wf_run_key(id),
        Some(other) => format!("<{}>", kind_name(other)),
    }
}

/// Evaluates an assignment in `scope`.
pub fn eval(a: &VariableAssignment, scope: &mut dyn Scope) -> Result<VariableValue, String> {
    eval_depth(a, scope, 0)
}

fn eval_depth(
    a: &VariableAssignment,
    scope: &mut dyn Scope,
    depth: usize,
) -> Result<VariableValue, String> {
    if depth > MAX_ASSIGNMENT_DEPTH {
        return Err("expression nested too deeply".into());
    }
    let base = match &a.source {
        None => return Err("assignment has no source".into()),
        Some(Source::VariableName(name)) => scope
            .variable(name)?
            .ok_or_else(|| format!("variable '{name}' does not exist"))?,
        Some(Source::LiteralValue(v)) => v.clone(),
        Some(Source::NodeOutput(r)) => scope
            .node_output(&r.node_name)?
            .ok_or_else(|| format!("node '{}' has no output yet", r.node_name))?,
        Some(Source::FormatString(f)) => format_string(f, scope, depth)?,
        Some(Source::Expression(e)) => expression(e, scope, depth)?,
        Some(Source::StructBuilder(_)) | Some(Source::SizeOf(_)) | Some(Source::MapBuilder(_)) => {
            return Err("assignment source is not supported".into())
        }
    };
    match &a.path {
        None => Ok(base),
        Some(variable_assignment::Path::JsonPath(p)) => select(&base, p),
        Some(variable_assignment::Path::LhPath(_)) => Err("lh_path is not supported".into()),
    }
}

fn format_string(
    f: &variable_assignment::FormatString,
    scope: &mut dyn Scope,
    depth: usize,
) -> Result<VariableValue, String> {
    let fmt = f.format.as_ref().ok_or("format string without a format")?;
    let fmt = display(&eval_depth(fmt, scope, depth + 1)?);
    let args = f
        .args
        .iter()
        .map(|a| eval_depth(a, scope, depth + 1).map(|v| display(&v)))
        .collect::<Result<Vec<_>, _>>()?;
    // `{0}`, `{1}`, ... are replaced by the arguments.
    let mut out = String::with_capacity(fmt.len());
    let mut rest = fmt.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => match after[..close].parse::<usize>() {
                Ok(i) if i < args.len() => {
                    out.push_str(&args[i]);
                    rest = &after[close + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            },
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(values::str(out))
}

fn expression(
    e: &variable_assignment::Expression,
    scope: &mut dyn Scope,
    depth: usize,
) -> Result<VariableValue, String> {
    let lhs = e.lhs.as_ref().ok_or("expression without lhs")?;
    let rhs = e.rhs.as_ref().ok_or("expression without rhs")?;
    let lhs = eval_depth(lhs, scope, depth + 1)?;
    let rhs = eval_depth(rhs, scope, depth + 1)?;
    match e.operation {
        Some(expression::Operation::MutationType(op)) => {
            let op = VariableMutationType::try_from(op).map_err(|_| "unknown operation")?;
            crate::mutation::operate(&lhs, op, &rhs)
        }
        Some(expression::Operation::Comparator(c)) => {
            let c = Comparator::try_from(c).map_err(|_| "unknown comparator")?;
            compare(c, &lhs, &rhs).map(values::boolean)
        }
        None => Err("expression without an operation".into()),
    }
}

fn as_f64(v: &VariableValue) -> Option<f64> {
    match v.value {
        Some(Value::Int(i)) => Some(i as f64),
        Some(Value::Double(d)) => Some(d),
        _ => None,
    }
}

/// Equality as specs expect it: numbers compare by value (1 == 1.0), JSON by structure.
pub fn equal(a: &VariableValue, b: &VariableValue) -> bool {
    if let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) {
        return x == y;
    }
    match (&a.value, &b.value) {
        (Some(Value::JsonObj(_)), Some(Value::JsonObj(_)))
        | (Some(Value::JsonArr(_)), Some(Value::JsonArr(_))) => {
            matches!((to_json(a), to_json(b)), (Ok(x), Ok(y)) if x == y)
        }
        _ => a == b,
    }
}

/// Evaluates `lhs <comparator> rhs`.
pub fn compare(c: Comparator, lhs: &VariableValue, rhs: &VariableValue) -> Result<bool, String> {
    use std::cmp::Ordering;
    let order = || -> Result<Ordering, String> {
        if let (Some(x), Some(y)) = (as_f64(lhs), as_f64(rhs)) {
            return x
                .partial_cmp(&y)
                .ok_or_else(|| "NaN is not ordered".to_string());
        }
        match (&lhs.value, &rhs.value) {
            (Some(Value::Str(x)), Some(Value::Str(y))) => Ok(x.cmp(y)),
            (Some(Value::UtcTimestamp(x)), Some(Value::UtcTimestamp(y))) => {
                Ok((x.seconds, x.nanos).cmp(&(y.seconds, y.nanos)))
            }
            _ => Err(format!(
                "cannot order {} and {}",
                values::type_name(values::type_of(lhs)),
                values::type_name(values::type_of(rhs))
            )),
        }
    };
    Ok(match c {
        Comparator::Equals => equal(lhs, rhs),
        Comparator::NotEquals => !equal(lhs, rhs),
        Comparator::LessThan => order()? == Ordering::Less,
        Comparator::GreaterThan => order()? == Ordering::Greater,
        Comparator::LessThanEq => order()? != Ordering::Greater,
        Comparator::GreaterThanEq => order()? != Ordering::Less,
        Comparator::In => contains(rhs, lhs)?,
        Comparator::NotIn => !contains(rhs, lhs)?,
    })
}

/// Whether `haystack` (an array, an object's keys, or a string) contains `needle`.
fn contains(haystack: &VariableValue, needle: &VariableValue) -> Result<bool, String> {
    match &haystack.value {
        Some(Value::JsonArr(_)) => {
            let items = to_json(haystack)?;
            let n = to_json(needle)?;
            Ok(items.as_array().is_some_and(|a| a.contains(&n)))
        }
        Some(Value::JsonObj(_)) => {
            let obj = to_json(haystack)?;
            let key = display(needle);
            Ok(obj.as_object().is_some_and(|o| o.contains_key(&key)))
        }
        Some(Value::Str(s)) => Ok(s.contains(&display(needle))),
        _ => Err(format!(
            "IN needs a JSON_ARR, JSON_OBJ or STR on the right, got {}",
            values::type_name(values::type_of(haystack))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Vars(BTreeMap<String, VariableValue>);
    impl Scope for Vars {
        fn variable(&mut self, name: &str) -> Result<Option<VariableValue>, String> {
            Ok(self.0.get(name).cloned())
        }
        fn node_output(&mut self, _: &str) -> Result<Option<VariableValue>, String> {
            Ok(None)
        }
    }

    fn var(name: &str) -> VariableAssignment {
        VariableAssignment {
            source: Some(Source::VariableName(name.into())),
            ..Default::default()
        }
    }

    #[test]
    fn variables_with_json_path() {
        let mut s = Vars(BTreeMap::from([(
            "order".to_string(),
            values::json_obj(r#"{"total": 42, "items": ["a"]}"#),
        )]));
        let mut a = var("order");
        a.path = Some(variable_assignment::Path::JsonPath("$.total".into()));
        assert_eq!(eval(&a, &mut s).unwrap(), values::int(42));
        a.path = Some(variable_assignment::Path::JsonPath("$.nope".into()));
        assert!(eval(&a, &mut s).is_err());
        assert!(eval(&var("missing"), &mut s).is_err());
    }

    #[test]
    fn comparisons() {
        assert!(compare(Comparator::LessThan, &values::int(1), &values::double(1.5)).unwrap());
        assert!(compare(Comparator::Equals, &values::int(2), &values::double(2.0)).unwrap());
        assert!(compare(Comparator::In, &values::int(2), &values::json_arr("[1,2]")).unwrap());
        assert!(compare(
            Comparator::NotIn,
            &values::str("z"),
            &values::json_obj(r#"{"a":1}"#)
        )
        .unwrap());
        assert!(compare(Comparator::LessThan, &values::str("a"), &values::int(1)).is_err());
    }

    #[test]
    fn format_strings() {
        let mut s = Vars(BTreeMap::from([("n".to_string(), values::int(7))]));
        let f = VariableAssignment {
            source: Some(Source::FormatString(Box::new(
                variable_assignment::FormatString {
                    format: Some(Box::new(VariableAssignment {
                        source: Some(Source::LiteralValue(values::str("n={0}, {1}{"))),
                        ..Default::default()
                    })),
                    args: vec![var("n")],
                },
            ))),
            ..Default::default()
        };
        assert_eq!(eval(&f, &mut s).unwrap(), values::str("n=7, {1}{"));
    }
}
