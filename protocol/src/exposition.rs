//! The Prometheus text exposition format, version 0.0.4, in which the snippet
//! (`/__metrics`) and the backend objects (`/db/{tenant}/__metrics`) give operators their
//! figures: every family has `# HELP` and `# TYPE`, and every sample carries one label
//! first that tells its source apart (`isolate="…"` for a snippet isolate, `tenant="…"`
//! for an object), since a scraper reads many of them through one address.

/// The `Content-Type` of such a document.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The metric family kinds the project writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until its source restarts); the name ends in `_total`.
    Counter,
    /// A value now.
    Gauge,
    /// Samples counted into buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A document being written: families one after another, each `# HELP`, `# TYPE`, then its
/// samples, every sample with the source's label first.
pub struct Exposition {
    out: String,
    /// `name="value"`, escaped: the first label of every sample.
    first: String,
}

impl Exposition {
    /// An empty document whose every sample starts with the label `label="value"`.
    pub fn new(label: &str, value: &str) -> Exposition {
        Exposition { out: String::with_capacity(8 * 1024), first: format!("{label}=\"{}\"", label_value(value)) }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str(&format!("# HELP {name} {}\n# TYPE {name} {}\n", help_text(help), kind.as_str()));
    }

    /// One sample: `name{first,labels…} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
        self.out.push('{');
        self.out.push_str(&self.first);
        for (k, v) in labels {
            self.out.push_str(&format!(",{k}=\"{}\"", label_value(v)));
        }
        self.out.push_str("} ");
        self.out.push_str(value);
        self.out.push('\n');
    }

    /// A family of one sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], &value.to_string());
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A `# HELP` text: backslash and newline escaped.
fn help_text(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Milliseconds as seconds with three decimals, by integer arithmetic: exact, and float
/// formatting would add ~11 KB to the snippet's wasm.
pub fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped_and_the_first_label_leads() {
        let mut e = Exposition::new("isolate", "a\"b\\c\nd");
        e.family("m", Kind::Gauge, "two\nlines \\ here");
        e.sample("m", &[("tenant", "t\"1")], "1");
        assert_eq!(
            e.finish(),
            "# HELP m two\\nlines \\\\ here\n# TYPE m gauge\nm{isolate=\"a\\\"b\\\\c\\nd\",tenant=\"t\\\"1\"} 1\n"
        );
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(1_700_000_000_123), "1700000000.123");
        assert_eq!(seconds(7), "0.007");
    }
}
