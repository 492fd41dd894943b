//! Variable mutations: the operations an edge applies to a variable (`VAR_MUTATION_ERROR` on
//! failure, which fails the thread and changes no variable).

use halter_api::littlehorse::{
    variable_value::Value, VariableMutationType, VariableType, VariableValue,
};
use halter_api::values;
use serde_json::Value as Json;

use crate::expr::{display, equal, from_json, to_json};
use crate::json_path;

/// The operations Halter implements; PutWfSpec rejects the others.
pub fn supported(op: VariableMutationType) -> bool {
    !matches!(
        op,
        VariableMutationType::And | VariableMutationType::Or | VariableMutationType::Pow
    )
}

/// `lhs <op> rhs`, typed by `lhs`.
pub fn operate(
    lhs: &VariableValue,
    op: VariableMutationType,
    rhs: &VariableValue,
) -> Result<VariableValue, String> {
    use VariableMutationType as Op;
    let bad = || {
        format!(
            "cannot {} {} with {}",
            op.as_str_name(),
            values::type_name(values::type_of(lhs)),
            values::type_name(values::type_of(rhs))
        )
    };
    match op {
        Op::Assign => Ok(rhs.clone()),
        Op::Add | Op::Subtract | Op::Multiply | Op::Divide => match (&lhs.value, &rhs.value) {
            (Some(Value::Int(a)), Some(Value::Int(b))) => int_op(op, *a, *b).map(values::int),
            (Some(Value::Int(a)), Some(Value::Double(b))) => {
                // Typed by the left side: the result is truncated back to INT.
                double_op(op, *a as f64, *b).map(|d| values::int(d as i64))
            }
            (Some(Value::Double(a)), Some(Value::Int(b))) => {
                double_op(op, *a, *b as f64).map(values::double)
            }
            (Some(Value::Double(a)), Some(Value::Double(b))) => {
                double_op(op, *a, *b).map(values::double)
            }
            (Some(Value::Str(a)), _) if op == Op::Add => {
                Ok(values::str(format!("{a}{}", display(rhs))))
            }
            (Some(Value::JsonArr(_)), _) if op == Op::Add => {
                let mut arr = to_json(lhs)?;
                arr.as_array_mut().ok_or_else(bad)?.push(to_json(rhs)?);
                Ok(from_json(&arr))
            }
            _ => Err(bad()),
        },
        Op::Extend => match (&lhs.value, &rhs.value) {
            (Some(Value::JsonArr(_)), Some(Value::JsonArr(_))) => {
                let mut arr = to_json(lhs)?;
                let more = to_json(rhs)?;
                let (Some(a), Some(b)) = (arr.as_array_mut(), more.as_array()) else {
                    return Err(bad());
                };
                a.extend(b.iter().cloned());
                Ok(from_json(&arr))
            }
            (Some(Value::JsonArr(_)), _) => operate(lhs, Op::Add, rhs),
            (Some(Value::Str(a)), _) => Ok(values::str(format!("{a}{}", display(rhs)))),
            _ => Err(bad()),
        },
        Op::RemoveIfPresent => match &lhs.value {
            Some(Value::JsonArr(_)) => {
                let arr = to_json(lhs)?;
                let kept: Vec<Json> = arr
                    .as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .filter(|item| !equal(&from_json(item), rhs))
                    .cloned()
                    .collect();
                Ok(from_json(&Json::Array(kept)))
            }
            Some(Value::JsonObj(_)) => operate(lhs, Op::RemoveKey, rhs),
            _ => Err(bad()),
        },
        Op::RemoveIndex => match (&lhs.value, &rhs.value) {
            (Some(Value::JsonArr(_)), Some(Value::Int(i))) => {
                let mut arr = to_json(lhs)?;
                let a = arr.as_array_mut().ok_or_else(bad)?;
                let len = a.len() as i64;
                let idx = if *i < 0 { len + i } else { *i };
                if idx < 0 || idx >= len {
                    return Err(format!("index {i} is out of range for {len} items"));
                }
                a.remove(idx as usize);
                Ok(from_json(&arr))
            }
            _ => Err(bad()),
        },
        Op::RemoveKey => match (&lhs.value, &rhs.value) {
            (Some(Value::JsonObj(_)), Some(Value::Str(k))) => {
                let mut obj = to_json(lhs)?;
                obj.as_object_mut().ok_or_else(bad)?.remove(k);
                Ok(from_json(&obj))
            }
            _ => Err(bad()),
        },
        Op::And | Op::Or | Op::Pow => Err(format!("{} is not supported", op.as_str_name())),
    }
}

fn int_op(op: VariableMutationType, a: i64, b: i64) -> Result<i64, String> {
    use VariableMutationType as Op;
    let r = match op {
        Op::Add => a.checked_add(b),
        Op::Subtract => a.checked_sub(b),
        Op::Multiply => a.checked_mul(b),
        Op::Divide if b == 0 => return Err("division by zero".into()),
        Op::Divide => a.checked_div(b),
        _ => None,
    };
    r.ok_or_else(|| "integer overflow".to_string())
}

fn double_op(op: VariableMutationType, a: f64, b: f64) -> Result<f64, String> {
    use VariableMutationType as Op;
    let r = match op {
        Op::Add => a + b,
        Op::Subtract => a - b,
        Op::Multiply => a * b,
        Op::Divide if b == 0.0 => return Err("division by zero".into()),
        Op::Divide => a / b,
        _ => return Err("not an arithmetic operation".into()),
    };
    if r.is_finite() {
        Ok(r)
    } else {
        Err("result is not a finite number".into())
    }
}

/// The new value of a variable of type `ty` holding `current` after `op` with `rhs`, applied at
/// `lhs_json_path` inside it when given.
pub fn mutate(
    ty: VariableType,
    current: &VariableValue,
    lhs_json_path: Option<&str>,
    op: VariableMutationType,
    rhs: &VariableValue,
) -> Result<VariableValue, String> {
    let result = match lhs_json_path {
        None => coerce(ty, operate(current, op, rhs)?)?,
        Some(path) => {
            let steps = json_path::parse(path)?;
            let mut doc = to_json(current)?;
            let inner = json_path::get(&doc, &steps)
                .map(from_json)
                .unwrap_or_default();
            let updated = to_json(&operate(&inner, op, rhs)?)?;
            json_path::set(&mut doc, &steps, updated)?;
            from_json(&doc)
        }
    };
    if values::admits(ty, &result) {
        Ok(result)
    } else {
        Err(format!(
            "cannot store a {} value in a {} variable",
            values::type_name(values::type_of(&result)),
            ty.as_str_name()
        ))
    }
}

/// The few implicit conversions an assignment makes: an INT into a DOUBLE variable, a JSON
/// string into a JSON variable.
fn coerce(ty: VariableType, v: VariableValue) -> Result<VariableValue, String> {
    Ok(match (ty, &v.value) {
        (VariableType::Double, Some(Value::Int(i))) => values::double(*i as f64),
        (VariableType::JsonObj, Some(Value::Str(s)))
        | (VariableType::JsonArr, Some(Value::Str(s))) => {
            let j: Json = serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?;
            let out = from_json(&j);
            if values::admits(ty, &out) {
                out
            } else {
                v
            }
        }
        _ => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use VariableMutationType as Op;

    #[test]
    fn arithmetic_is_typed_by_the_left_side() {
        assert_eq!(
            operate(&values::int(7), Op::Divide, &values::int(2)).unwrap(),
            values::int(3)
        );
        assert_eq!(
            operate(&values::int(7), Op::Multiply, &values::double(1.5)).unwrap(),
            values::int(10)
        );
        assert_eq!(
            operate(&values::double(1.0), Op::Add, &values::int(2)).unwrap(),
            values::double(3.0)
        );
        assert!(operate(&values::int(1), Op::Divide, &values::int(0)).is_err());
        assert!(operate(&values::int(i64::MAX), Op::Add, &values::int(1)).is_err());
        assert!(operate(&values::null(), Op::Add, &values::int(1)).is_err());
    }

    #[test]
    fn collections() {
        let arr = values::json_arr("[1,2,3,2]");
        assert_eq!(
            operate(&arr, Op::RemoveIfPresent, &values::int(2)).unwrap(),
            values::json_arr("[1,3]")
        );
        assert_eq!(
            operate(&arr, Op::RemoveIndex, &values::int(-1)).unwrap(),
            values::json_arr("[1,2,3]")
        );
        assert!(operate(&arr, Op::RemoveIndex, &values::int(4)).is_err());
        assert_eq!(
            operate(&arr, Op::Extend, &values::json_arr("[9]")).unwrap(),
            values::json_arr("[1,2,3,2,9]")
        );
        let obj = values::json_obj(r#"{"a":1,"b":2}"#);
        assert_eq!(
            operate(&obj, Op::RemoveKey, &values::str("a")).unwrap(),
            values::json_obj(r#"{"b":2}"#)
        );
    }

    #[test]
    fn mutate_checks_the_variable_type() {
        assert!(mutate(
            VariableType::Int,
            &values::int(1),
            None,
            Op::Assign,
            &values::str("x")
        )
        .is_err());
        assert_eq!(
            mutate(
                VariableType::Double,
                &values::null(),
                None,
                Op::Assign,
                &values::int(2)
            )
            .unwrap(),
            values::double(2.0)
        );
        let doc = values::json_obj(r#"{"n":1}"#);
        assert_eq!(
            mutate(
                VariableType::JsonObj,
                &doc,
                Some("$.n"),
                Op::Add,
                &values::int(4)
            )
            .unwrap(),
            values::json_obj(r#"{"n":5}"#)
        );
    }
}
