//! The one type for every password ftsd holds: the probe, catalog and etcd passwords from the
//! configuration, the wire client's credentials, and the catalog and postgres-driver connection
//! settings.
//!
//! A `Secret` prints as `********` under both `Debug` and `Display`, so a struct that holds one
//! can derive `Debug` and be logged without leaking it, and its memory is overwritten when it is
//! dropped. The text is reachable only through [`Secret::expose`], which is called where the
//! password is handed to a client library or the wire.

use std::fmt;

use zeroize::Zeroizing;

/// What every secret prints as.
pub const MASK: &str = "********";

/// A password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The password itself; only for handing it to the library or message that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "******** ******** Some(********)"
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
