use osprey_core::{Error, ErrorKind};

/// Maps an object_store error to an Osprey error naming the object.
pub(crate) fn from_object_store(err: object_store::Error, what: &str) -> Error {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Error::new(ErrorKind::NotFound, format!("object `{what}` does not exist")),
        E::AlreadyExists { .. } | E::Precondition { .. } => {
            Error::new(ErrorKind::AlreadyExists, format!("object `{what}` already exists"))
        }
        other => Error::new(ErrorKind::Storage, format!("object store error on `{what}`: {other}")),
    }
}
