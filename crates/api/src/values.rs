//! Small conversions around `VariableValue` and the type system, shared by the state machine,
//! the server and the CLI.

use crate::littlehorse::{
    type_definition::DefinedType, variable_value::Value, ReturnType, TypeDefinition, VariableDef,
    VariableType, VariableValue,
};

/// The type of a value, or `None` for the null value (an unset `value`), which every type admits.
pub fn type_of(v: &VariableValue) -> Option<VariableType> {
    Some(match v.value.as_ref()? {
        Value::JsonObj(_) => VariableType::JsonObj,
        Value::JsonArr(_) => VariableType::JsonArr,
        Value::Double(_) => VariableType::Double,
        Value::Bool(_) => VariableType::Bool,
        Value::Str(_) => VariableType::Str,
        Value::Int(_) => VariableType::Int,
        Value::Bytes(_) => VariableType::Bytes,
        Value::WfRunId(_) => VariableType::WfRunId,
        Value::UtcTimestamp(_) => VariableType::Timestamp,
        // Structs, arrays and maps are not primitive types; they never match one.
        Value::Struct(_) | Value::Array(_) | Value::Map(_) => return None,
    })
}

/// Whether the value is one of the non-primitive kinds Halter does not support yet.
pub fn is_unsupported_kind(v: &VariableValue) -> Option<&'static str> {
    match v.value.as_ref()? {
        Value::Struct(_) => Some("Struct values"),
        Value::Array(_) => Some("Array values"),
        Value::Map(_) => Some("Map values"),
        _ => None,
    }
}

/// The primitive type a `TypeDefinition` names, or the name of the unsupported feature it uses.
pub fn primitive_of(td: &TypeDefinition) -> Result<VariableType, &'static str> {
    match &td.defined_type {
        Some(DefinedType::PrimitiveType(t)) => {
            VariableType::try_from(*t).map_err(|_| "an unknown VariableType")
        }
        Some(DefinedType::StructDefId(_)) => Err("StructDef types"),
        Some(DefinedType::InlineArrayDef(_)) => Err("inline array types"),
        Some(DefinedType::InlineStructDef(_)) => Err("inline struct types"),
        Some(DefinedType::InlineMapDef(_)) => Err("inline map types"),
        // An unset oneof is the proto3 default, primitive type 0.
        None => Ok(VariableType::JsonObj),
    }
}

/// The type a `ReturnType` declares (a TaskDef's output, an event def's content): `None` for
/// void, which accepts anything; the name of the unsupported feature it uses otherwise.
pub fn return_type_of(rt: Option<&ReturnType>) -> Result<Option<VariableType>, &'static str> {
    rt.and_then(|r| r.return_type.as_ref())
        .map(primitive_of)
        .transpose()
}

/// The declared type of a variable: `type_def` when set (newer clients), else the legacy `type`.
pub fn declared_type(def: &VariableDef) -> Result<VariableType, &'static str> {
    match (&def.type_def, def.r#type) {
        (Some(td), _) => primitive_of(td),
        (None, Some(t)) => VariableType::try_from(t).map_err(|_| "an unknown VariableType"),
        (None, None) => Err("a variable without a type"),
    }
}

/// Whether `v` may be stored in a variable of type `ty`. Null is always accepted.
pub fn admits(ty: VariableType, v: &VariableValue) -> bool {
    match type_of(v) {
        None => v.value.is_none(),
        Some(t) => t == ty,
    }
}

/// Human name of a type, as LittleHorse spells it.
pub fn type_name(ty: Option<VariableType>) -> &'static str {
    ty.map_or("NULL", |t| t.as_str_name())
}

pub fn null() -> VariableValue {
    VariableValue { value: None }
}

pub fn str(s: impl Into<String>) -> VariableValue {
    VariableValue {
        value: Some(Value::Str(s.into())),
    }
}

pub fn int(i: i64) -> VariableValue {
    VariableValue {
        value: Some(Value::Int(i)),
    }
}

pub fn double(d: f64) -> VariableValue {
    VariableValue {
        value: Some(Value::Double(d)),
    }
}

pub fn boolean(b: bool) -> VariableValue {
    VariableValue {
        value: Some(Value::Bool(b)),
    }
}

pub fn json_obj(s: impl Into<String>) -> VariableValue {
    VariableValue {
        value: Some(Value::JsonObj(s.into())),
    }
}

pub fn json_arr(s: impl Into<String>) -> VariableValue {
    VariableValue {
        value: Some(Value::JsonArr(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_admitted_by_every_type() {
        for t in [VariableType::Int, VariableType::Str, VariableType::JsonObj] {
            assert!(admits(t, &null()));
        }
    }

    #[test]
    fn types_must_match_exactly() {
        assert!(admits(VariableType::Int, &int(3)));
        assert!(!admits(VariableType::Int, &str("3")));
        assert!(!admits(VariableType::Double, &int(3)));
    }
}
