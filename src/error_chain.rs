//! One-line rendering of an error with its sources: tokio-postgres and tonic keep the useful
//! part (the server's message, the I/O error) in the `source` chain, and logs and CLI errors
//! must say what went wrong on one line.

/// `e` followed by each source not already contained in the text, joined by `": "`.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fmt;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connecting")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn sources_are_appended_once() {
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(super::one_line(&e), "connecting: refused");
    }
}
