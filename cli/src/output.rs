//! Output: `key: value` lines for people and scripts (an id is the one token after its key, so
//! `cut -d" " -f2` extracts it), or one JSON document with `--output json`.

use aitbc_protocol::Amount;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt::Display;
use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What a command found: built once, printed in the chosen format at the end.
#[derive(Debug)]
pub struct Report {
    format: Format,
    lines: Vec<String>,
    json: Map<String, Value>,
    failed: bool,
}

/// A rule checked by an audit, verification or health action.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub rule: String,
    pub pass: bool,
    pub detail: String,
}

impl Report {
    pub fn new(format: Format) -> Report {
        Report {
            format,
            lines: Vec::new(),
            json: Map::new(),
            failed: false,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// `key: value`, and `"key": value` in JSON (numbers stay numbers).
    pub fn field<V: Display + Serialize>(&mut self, key: &str, value: V) -> &mut Self {
        self.lines.push(format!("{key}: {value}"));
        self.json.insert(
            key.to_string(),
            serde_json::to_value(&value).unwrap_or(Value::Null),
        );
        self
    }

    /// An amount: `key: 12.5 AIT` in text; in JSON `key` stays `"12.5 AIT"` (as before) and
    /// [`amount_fields`] adds `key_ait` and `key_base_units`.
    pub fn amount(&mut self, key: &str, a: Amount) -> &mut Self {
        self.field(key, format!("{a} AIT"));
        self.amount_fields(key, a)
    }

    /// The JSON-only fields of an amount: `key_ait` and `key_base_units` (see [`amount_fields`]).
    pub fn amount_fields(&mut self, key: &str, a: Amount) -> &mut Self {
        for (k, v) in amount_fields(key, a) {
            self.json.insert(k, v);
        }
        self
    }

    /// A JSON-only field (structured detail that the text form shows in other lines).
    pub fn data<V: Serialize>(&mut self, key: &str, value: V) -> &mut Self {
        self.json.insert(
            key.to_string(),
            serde_json::to_value(&value).unwrap_or(Value::Null),
        );
        self
    }

    /// A text-only line.
    pub fn text(&mut self, line: impl Into<String>) -> &mut Self {
        self.lines.push(line.into());
        self
    }

    /// One item of a list: a text line and an object pushed onto the JSON array `list`.
    pub fn row<V: Serialize>(
        &mut self,
        list: &str,
        line: impl Into<String>,
        value: V,
    ) -> &mut Self {
        self.lines.push(line.into());
        let v = serde_json::to_value(&value).unwrap_or(Value::Null);
        match self
            .json
            .entry(list.to_string())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(a) => a.push(v),
            other => *other = Value::Array(vec![v]),
        }
        self
    }

    /// Makes sure the JSON array `list` exists (empty lists print `[]`, not nothing).
    pub fn list(&mut self, list: &str) -> &mut Self {
        self.json
            .entry(list.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        self
    }

    /// A pass/fail rule: `check: RULE pass|FAIL - detail`; any failure makes the exit code 1.
    pub fn check(&mut self, rule: &str, pass: bool, detail: impl Into<String>) -> &mut Self {
        let detail = detail.into();
        self.failed |= !pass;
        let line = format_check(rule, pass, &detail);
        self.row(
            "checks",
            line,
            Check {
                rule: rule.to_string(),
                pass,
                detail,
            },
        )
    }

    /// A table: aligned columns in text, an array of objects in JSON.
    pub fn table(&mut self, list: &str, headers: &[&str], rows: &[Vec<String>]) -> &mut Self {
        for line in format_table(headers, rows) {
            self.lines.push(line);
        }
        let arr: Vec<Value> = rows
            .iter()
            .map(|r| {
                Value::Object(
                    headers
                        .iter()
                        .zip(r)
                        .map(|(h, c)| (h.to_string(), Value::String(c.clone())))
                        .collect(),
                )
            })
            .collect();
        self.json.insert(list.to_string(), Value::Array(arr));
        self
    }

    /// Marks the report as failed (exit code 1) without a check line.
    pub fn fail(&mut self) -> &mut Self {
        self.failed = true;
        self
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn checks_passed(&self) -> bool {
        !self.failed
    }

    /// The text the report prints.
    pub fn render(&self) -> String {
        match self.format {
            Format::Text => {
                let mut s = self.lines.join("\n");
                if !s.is_empty() {
                    s.push('\n');
                }
                s
            }
            Format::Json => {
                let mut m = self.json.clone();
                if self.lines.iter().any(|l| l.starts_with("check: ")) {
                    m.insert("passed".into(), Value::Bool(!self.failed));
                }
                let mut s =
                    serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_else(|_| "{}".into());
                s.push('\n');
                s
            }
        }
    }

    /// Prints to stdout.
    pub fn print(&self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.render().as_bytes());
        let _ = out.flush();
    }
}

/// The machine-readable JSON fields of an amount named `key`, the same in every command:
/// `key_ait`, AIT as an exact decimal string (`"979999.997"`), and `key_base_units`, the integer
/// number of base units as a string (`"979999997000"`; 1 AIT = 10^6 base units). Strings, because
/// amounts are u128 and a JSON number loses digits in most parsers.
pub fn amount_fields(key: &str, a: Amount) -> [(String, Value); 2] {
    [
        (format!("{key}_ait"), Value::String(a.to_string())),
        (
            format!("{key}_base_units"),
            Value::String(a.base_units().to_string()),
        ),
    ]
}

/// Adds [`amount_fields`] for each `(key, amount)` to a JSON object (a row); other values are
/// left alone.
pub fn with_amounts(mut v: Value, amounts: &[(&str, Amount)]) -> Value {
    if let Value::Object(m) = &mut v {
        for (key, a) in amounts {
            m.extend(amount_fields(key, *a));
        }
    }
    v
}

pub fn format_check(rule: &str, pass: bool, detail: &str) -> String {
    let verdict = if pass { "pass" } else { "FAIL" };
    if detail.is_empty() {
        format!("check: {rule} {verdict}")
    } else {
        format!("check: {rule} {verdict} - {detail}")
    }
}

/// Left-aligned columns separated by two spaces.
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        line.trim_end().to_string()
    };
    let mut out = vec![fmt_row(headers.to_vec())];
    for r in rows {
        out.push(fmt_row(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Seconds with millisecond precision, `1.234s`.
pub fn secs(ms: f64) -> String {
    format!("{:.3}s", ms / 1000.0)
}

/// The `q`-quantile (0..=1) of `sorted` (nearest rank); `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_is_key_value_lines_and_ids_cut_cleanly() {
        let mut r = Report::new(Format::Text);
        r.field("bid_id", "bid-0123").field("block", 42u64);
        assert_eq!(r.render(), "bid_id: bid-0123\nblock: 42\n");
        let first = r
            .render()
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(first, "bid-0123");
    }

    #[test]
    fn json_output_is_one_document_with_lists_and_checks() {
        let mut r = Report::new(Format::Json);
        r.field("block", 7u64).row(
            "listings",
            "service_id: svc-1",
            serde_json::json!({"id": "svc-1"}),
        );
        r.check("supply", true, "ok")
            .check("escrow", false, "off by 1");
        let v: Value = serde_json::from_str(&r.render()).unwrap();
        assert_eq!(v["block"], 7);
        assert_eq!(v["listings"][0]["id"], "svc-1");
        assert_eq!(v["checks"][1]["pass"], false);
        assert_eq!(v["passed"], false);
        assert!(r.failed());
    }

    #[test]
    fn amounts_are_base_units_and_decimals_next_to_the_old_field() {
        let a: Amount = "979999.997".parse().unwrap();
        let mut r = Report::new(Format::Json);
        r.amount("balance", a);
        let v: Value = serde_json::from_str(&r.render()).unwrap();
        assert_eq!(v["balance"], "979999.997 AIT");
        assert_eq!(v["balance_ait"], "979999.997");
        assert_eq!(v["balance_base_units"], "979999997000");
        let mut t = Report::new(Format::Text);
        t.amount("balance", a);
        assert_eq!(t.render(), "balance: 979999.997 AIT\n");
        let row = with_amounts(
            serde_json::json!({"price": Amount(10)}),
            &[("price", Amount(10))],
        );
        assert_eq!(row["price"], "0.00001");
        assert_eq!(row["price_ait"], "0.00001");
        assert_eq!(row["price_base_units"], "10");
        assert_eq!(with_amounts(Value::Null, &[("x", Amount(1))]), Value::Null);
    }

    #[test]
    fn checks_say_pass_or_fail_per_rule() {
        assert_eq!(
            format_check("supply", true, "a = b"),
            "check: supply pass - a = b"
        );
        assert_eq!(format_check("supply", false, ""), "check: supply FAIL");
    }

    #[test]
    fn tables_align_columns() {
        let t = format_table(
            &["metric", "value"],
            &[
                vec!["submitted".into(), "1000".into()],
                vec!["tx/s".into(), "12.5".into()],
            ],
        );
        assert_eq!(
            t,
            vec!["metric     value", "submitted  1000", "tx/s       12.5"]
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
