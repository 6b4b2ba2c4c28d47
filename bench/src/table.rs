//! Plain-text tables for the terminal, and the same rows as Markdown for docs/performance.md.

use std::fmt;

pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut text = line(&self.headers);
        text += &line(&vec!["---".to_owned(); self.headers.len()]);
        for row in &self.rows {
            text += &line(row);
        }
        text
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for cells in std::iter::once(&self.headers).chain(&self.rows) {
            let padded: Vec<String> =
                cells.iter().zip(&widths).map(|(cell, &width)| format!("{cell:>width$}")).collect();
            writeln!(f, "{}", padded.join("  "))?;
        }
        Ok(())
    }
}

/// A number with a fixed count of decimals, or a dash for "not measured".
pub fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_text_and_markdown() {
        let mut table = Table::new(&["target", "µs"]);
        table.row(vec!["switchboard".into(), num(Some(4.567), 2)]);
        table.row(vec!["ws".into(), num(None, 2)]);
        assert_eq!(table.to_string(), "     target    µs\nswitchboard  4.57\n         ws     -\n");
        assert_eq!(
            table.markdown(),
            "| target | µs |\n| --- | --- |\n| switchboard | 4.57 |\n| ws | - |\n"
        );
    }
}
