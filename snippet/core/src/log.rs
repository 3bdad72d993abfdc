//! The snippet's log lines: one JSON object per line, so the platform's log search can
//! filter by field (`level`, `requestId`, `tenant`) instead of by text. Each line keeps the
//! human message in `msg`. The glue writes every line it logs through [`Line`]; nothing here
//! is handed a token, and no caller puts one in a field.

use crate::json_string;

/// How bad it is: the console method the glue writes it with, and the `level` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed: a request, a stream, an upstream, a fetch.
    Error,
    /// Configuration the snippet works around (a key it skips).
    Warn,
    /// Routine: the summary of a cron round.
    Info,
}

impl Level {
    /// The `level` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
        }
    }
}

/// One log line being built: `level` and `msg` first, then the fields in the order added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    level: Level,
    msg: String,
    /// Each field's name and its value, already JSON.
    fields: Vec<(&'static str, String)>,
}

impl Line {
    /// An error line saying `msg`.
    pub fn error(msg: impl Into<String>) -> Line {
        Line::new(Level::Error, msg)
    }

    /// A line of `level` saying `msg`.
    pub fn new(level: Level, msg: impl Into<String>) -> Line {
        Line { level, msg: msg.into(), fields: Vec::new() }
    }

    /// Its level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Adds a string field; an empty value (not known here) is left out.
    pub fn str(mut self, name: &'static str, value: &str) -> Line {
        if !value.is_empty() {
            self.fields.push((name, json_string(value)));
        }
        self
    }

    /// Adds a numeric field.
    pub fn num(mut self, name: &'static str, value: u64) -> Line {
        self.fields.push((name, value.to_string()));
        self
    }

    /// The line: one JSON object, no newline inside (a message's own newlines are escaped,
    /// so one event is one line in any log viewer).
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"level\":\"{}\",\"msg\":{}", self.level.as_str(), json_string(&self.msg));
        for (name, value) in &self.fields {
            out.push_str(&format!(",{}:{value}", json_string(name)));
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_level_and_msg_first() {
        let line = Line::error("502 backend unreachable: \"x\"\nfailed")
            .str("requestId", "0123abcd")
            .str("tenant", "acme")
            .str("stream", "")
            .num("status", 502)
            .to_json();
        assert_eq!(
            line,
            r#"{"level":"error","msg":"502 backend unreachable: \"x\"\nfailed","requestId":"0123abcd","tenant":"acme","status":502}"#
        );
        assert!(!line.contains('\n'));
        let info = Line::new(Level::Info, "cron round").num("upstreams", 3).to_json();
        assert_eq!(info, r#"{"level":"info","msg":"cron round","upstreams":3}"#);
    }
}
