//! Every `Rejection` becomes a `tonic::Status` here, and nowhere else.

use halter_state_machine::Rejection;
use tonic::{Code, Status};

pub fn to_status(r: &Rejection) -> Status {
    let code = match r {
        Rejection::InvalidArgument(_) => Code::InvalidArgument,
        Rejection::NotFound(_) => Code::NotFound,
        Rejection::AlreadyExists(_) => Code::AlreadyExists,
        Rejection::FailedPrecondition(_) => Code::FailedPrecondition,
        Rejection::ResourceExhausted(_) => Code::ResourceExhausted,
    };
    Status::new(code, r.to_string())
}

/// The inverse of [`to_status`], for outcomes forwarded between nodes.
pub fn from_code(code: i32, message: String) -> Rejection {
    match Code::from_i32(code) {
        Code::NotFound => Rejection::NotFound(message),
        Code::AlreadyExists => Rejection::AlreadyExists(message),
        Code::FailedPrecondition => Rejection::FailedPrecondition(message),
        Code::ResourceExhausted => Rejection::ResourceExhausted(message),
        _ => Rejection::InvalidArgument(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_kept() {
        let s = to_status(&Rejection::NotFound("WfRun 'x' not found".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "WfRun 'x' not found");
        let s = to_status(&Rejection::ResourceExhausted("too big".into()));
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
