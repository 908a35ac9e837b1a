//! The effective configuration printed as TOML with secrets masked, and the masking of
//! connection strings. The printout is itself a valid configuration file (masked passwords
//! aside), so an operator can copy it.

use std::fmt::Write as _;

use super::keys::KEYS;
use super::{Config, Secret, MASK};

pub(crate) fn render_masked(cfg: &Config) -> String {
    let mut out = String::from("# effective ftsd configuration; secrets are shown as ********\n");
    let mut table = "";
    for key in KEYS {
        let (key_table, leaf) = key.name.split_once('.').unwrap_or(("", key.name));
        if key_table != table {
            write_password(&mut out, cfg, table);
            let _ = write!(out, "\n[{key_table}]\n");
            table = key_table;
        }
        match (key.get)(cfg) {
            Some(value) => {
                let _ = writeln!(out, "{leaf} = {value}");
            }
            None => {
                let _ = writeln!(out, "# {leaf} is not set");
            }
        }
    }
    write_password(&mut out, cfg, table);
    out
}

/// Passwords are not file keys, so they appear only as a comment saying one is in use.
fn write_password(out: &mut String, cfg: &Config, table: &str) {
    let password: Option<&Secret> = match table {
        "probe" => cfg.probe.password.as_ref(),
        "catalog" => cfg.catalog.password.as_ref(),
        "coordinator" => cfg.coordinator.password.as_ref(),
        "etcd" => cfg.etcd.password.as_ref(),
        _ => None,
    };
    if password.is_some() {
        let _ = writeln!(out, "# password = \"{MASK}\"");
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A libpq connection string with its password replaced by `********`: the `user:password@`
/// part and a `password=` query parameter of a URL, or the `password` keyword of a key/value
/// string. The parsing follows tokio-postgres, which is what reads the string.
pub(crate) fn mask_conn_string(s: &str) -> String {
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            return format!("{scheme}{}", mask_url_rest(rest));
        }
    }
    mask_key_value(s)
}

fn mask_url_rest(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    // Credentials run to the first '@' (a literal '@' in a password must be percent-encoded).
    let rest = match rest.split_once('@') {
        Some((credentials, after)) => {
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    let _ = write!(out, "{user}:{MASK}");
                }
                None => out.push_str(credentials),
            }
            out.push('@');
            after
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((base, query)) => {
            out.push_str(base);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if percent_decode(name) == "password" => {
                        format!("{name}={MASK}")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

/// `%XX` decoding for comparing parameter names (tokio-postgres decodes them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `keyword = value` pairs; values are bare words or single-quoted, with backslash escapes.
fn mask_key_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return out;
        }
        let keyword_end = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let keyword = &rest[..keyword_end];
        out.push_str(keyword);
        let after_keyword = &rest[keyword_end..];
        let Some(after_eq) = after_keyword.trim_start().strip_prefix('=') else {
            // Not a valid connection string; hide the remainder in case it holds a secret.
            if !after_keyword.trim().is_empty() {
                let _ = write!(out, " {MASK}");
            }
            return out;
        };
        out.push('=');
        let value = after_eq.trim_start();
        let len = value_len(value);
        if keyword == "password" {
            out.push_str(MASK);
        } else {
            out.push_str(&value[..len]);
        }
        rest = &value[len..];
    }
}

/// Byte length of the value at the start of `s`, closing quote included.
fn value_len(s: &str) -> usize {
    let quoted = s.starts_with('\'');
    let mut chars = s.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return i + 1,
            c if !quoted && c.is_whitespace() => return i,
            _ => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords() {
        assert_eq!(
            mask_conn_string("postgresql://u:secret@h:5432/db"),
            "postgresql://u:********@h:5432/db"
        );
        assert_eq!(
            mask_conn_string("postgres://u@h/db?password=secret&sslmode=disable"),
            "postgres://u@h/db?password=********&sslmode=disable"
        );
        assert_eq!(
            mask_conn_string("postgres://h/db?passw%6Frd=secret"),
            "postgres://h/db?passw%6Frd=********"
        );
        assert_eq!(
            mask_conn_string("postgresql://u@h/db"),
            "postgresql://u@h/db"
        );
    }

    #[test]
    fn masks_key_value_passwords() {
        assert_eq!(
            mask_conn_string("host=h password=secret dbname=db"),
            "host=h password=******** dbname=db"
        );
        assert_eq!(
            mask_conn_string("password = 'sec ret\\' x' user=u"),
            "password=******** user=u"
        );
        assert_eq!(mask_conn_string("host=h password"), "host=h password");
        assert_eq!(
            mask_conn_string("host=h oops secret"),
            "host=h oops ********"
        );
    }

    #[test]
    fn escapes_toml_strings() {
        assert_eq!(toml_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
