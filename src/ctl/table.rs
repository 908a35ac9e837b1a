//! Aligned text tables and colours (ANSI, only when enabled).

use std::fmt::Write as _;

/// A colour for a cell or a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Plain,
    Red,
    Yellow,
    Green,
    Dim,
}

/// Whether to emit ANSI colours.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn paint(&self, text: &str, c: Color) -> String {
        let code = match c {
            Color::Plain => return text.to_string(),
            Color::Red => "31",
            Color::Yellow => "33",
            Color::Green => "32",
            Color::Dim => "2",
        };
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// One cell: text and colour.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub color: Color,
}

impl<T: Into<String>> From<T> for Cell {
    fn from(t: T) -> Self {
        Cell {
            text: t.into(),
            color: Color::Plain,
        }
    }
}

pub fn cell(text: impl Into<String>, color: Color) -> Cell {
    Cell {
        text: text.into(),
        color,
    }
}

/// Renders `rows` under `headers`, columns left-aligned and separated by two spaces; the
/// padding is computed on the plain text so colours never break the alignment. Trailing
/// spaces are trimmed.
pub fn render(style: Style, headers: &[&str], rows: &[Vec<Cell>]) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.text.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<(String, usize)>| {
        let mut s = String::new();
        for (i, (text, plain_len)) in cells.into_iter().enumerate() {
            s.push_str(&text);
            if i + 1 < cols {
                s.push_str(&" ".repeat(width[i] - plain_len + 2));
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(
        &mut out,
        headers
            .iter()
            .map(|h| (style.paint(h, Color::Dim), h.chars().count()))
            .collect(),
    );
    for row in rows {
        line(
            &mut out,
            (0..cols)
                .map(|i| match row.get(i) {
                    Some(c) => (style.paint(&c.text, c.color), c.text.chars().count()),
                    None => (String::new(), 0),
                })
                .collect(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_on_plain_text_even_with_colours() {
        let rows = vec![
            vec![Cell::from("1"), cell("down", Color::Red)],
            vec![Cell::from("10"), Cell::from("up")],
        ];
        let plain = render(Style { color: false }, &["ID", "STATUS"], &rows);
        assert_eq!(plain, "ID  STATUS\n1   down\n10  up\n");
        let coloured = render(Style { color: true }, &["ID", "STATUS"], &rows);
        assert!(coloured.contains("1   \x1b[31mdown\x1b[0m"), "{coloured:?}");
    }
}
