//! Protobuf JSON (the canonical proto3 mapping) for any message in [`crate::FILE_DESCRIPTOR_SET`],
//! through reflection: used by the example, halterctl and tests to show and read objects.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// Why a message could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("unknown message type {0}")]
    UnknownType(String),
    #[error("invalid protobuf bytes for {ty}: {source}")]
    Decode {
        ty: String,
        source: prost::DecodeError,
    },
    #[error("invalid JSON for {ty}: {source}")]
    Json {
        ty: String,
        source: serde_json::Error,
    },
}

/// The descriptor pool of all our protos, built once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set is produced by our own build script")
    })
}

/// Renders `msg`, whose full protobuf name is `full_name`, as canonical proto3 JSON.
pub fn to_json<M: prost::Message>(
    full_name: &str,
    msg: &M,
) -> Result<serde_json::Value, JsonError> {
    let desc = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| JsonError::UnknownType(full_name.to_string()))?;
    let dynamic =
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|source| {
            JsonError::Decode {
                ty: full_name.to_string(),
                source,
            }
        })?;
    let options = SerializeOptions::new().skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| JsonError::Json {
            ty: full_name.to_string(),
            source,
        })
}

/// Parses canonical proto3 JSON into `M`, whose full protobuf name is `full_name`.
pub fn from_json<M: prost::Message + Default>(full_name: &str, json: &str) -> Result<M, JsonError> {
    let desc = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| JsonError::UnknownType(full_name.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(desc, &mut de).map_err(|source| JsonError::Json {
        ty: full_name.to_string(),
        source,
    })?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|source| JsonError::Decode {
        ty: full_name.to_string(),
        source,
    })
}
