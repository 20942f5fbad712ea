//! A tiny JSON object writer for the one-line result (no serde_json dependency needed).

use std::fmt::Write;

/// A JSON object under construction; keys keep their insertion order.
#[derive(Debug, Default)]
pub struct Json {
    out: String,
}

/// `s` as a JSON string literal.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

impl Json {
    /// An empty object.
    pub fn new() -> Json {
        Json::default()
    }

    /// Adds a key with an already-encoded JSON value.
    pub fn raw(&mut self, key: &str, value: &str) -> &mut Json {
        if !self.out.is_empty() {
            self.out.push(',');
        }
        self.out.push_str(&quote(key));
        self.out.push(':');
        self.out.push_str(value);
        self
    }

    /// Adds a number: integers without a fraction, others rounded to 3 decimals;
    /// non-finite values become `null`.
    pub fn num(&mut self, key: &str, v: f64) -> &mut Json {
        let text = if !v.is_finite() {
            "null".to_string()
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            format!("{v:.3}")
        };
        self.raw(key, &text)
    }

    /// Adds a string.
    pub fn str(&mut self, key: &str, v: &str) -> &mut Json {
        self.raw(key, &quote(v))
    }

    /// Adds a boolean.
    pub fn bool(&mut self, key: &str, v: bool) -> &mut Json {
        self.raw(key, if v { "true" } else { "false" })
    }

    /// Adds a list of strings.
    pub fn str_list(&mut self, key: &str, v: &[String]) -> &mut Json {
        let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
        self.raw(key, &format!("[{}]", items.join(",")))
    }

    /// The finished object.
    pub fn finish(&self) -> String {
        format!("{{{}}}", self.out)
    }
}
