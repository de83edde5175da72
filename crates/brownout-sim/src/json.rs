//! A tiny JSON writer: enough for the reports, without a serialization dependency.

use crate::report::fmt_num;

/// Builds one JSON object, key by key.
#[derive(Debug)]
pub(crate) struct Json {
    out: String,
    first: bool,
}

impl Json {
    pub(crate) fn object() -> Json {
        Json {
            out: String::from("{"),
            first: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        escape_into(&mut self.out, key);
        self.out.push(':');
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Json {
        self.key(key);
        escape_into(&mut self.out, value);
        self
    }

    pub(crate) fn num(&mut self, key: &str, value: f64) -> &mut Json {
        self.key(key);
        self.out.push_str(&fmt_num(value));
        self
    }

    pub(crate) fn int(&mut self, key: &str, value: u64) -> &mut Json {
        self.key(key);
        self.out.push_str(&value.to_string());
        self
    }

    /// Inserts already-serialized JSON.
    pub(crate) fn raw(&mut self, key: &str, json: &str) -> &mut Json {
        self.key(key);
        self.out.push_str(json);
        self
    }

    pub(crate) fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.out);
        out.push('}');
        out
    }

    /// A JSON array of already-serialized items.
    pub(crate) fn array(items: &[String]) -> String {
        format!("[{}]", items.join(","))
    }
}

fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let mut j = Json::object();
        j.str("a\"b", "x\ny\u{1}")
            .num("n", 0.5)
            .num("nan", f64::NAN)
            .int("i", 3)
            .raw("arr", &Json::array(&["1".into(), "2".into()]));
        assert_eq!(
            j.finish(),
            r#"{"a\"b":"x\ny\u0001","n":0.5,"nan":null,"i":3,"arr":[1,2]}"#
        );
    }
}
