//! A small, strict JSON reader for token headers, claims and the JWK set. The snippet's
//! wasm has no serde (it would cost ~10 KB gzip of a 100 KB budget), and numbers are
//! converted without `str::parse::<f64>` (whose tables cost ~16 KB of wasm): claims need
//! only whole seconds. It reads exactly RFC 8259 JSON and refuses what a token parser
//! should not guess about: duplicate
//! object keys (RFC 7519 §4 lets a parser refuse them; taking the first or the last is
//! how two parsers come to disagree about one token), nesting deeper than
//! [`MAX_DEPTH`], and anything after the value.

/// Deepest nesting accepted. Tokens and key sets are shallow; the bound keeps a hostile
/// input from recursing deep.
pub const MAX_DEPTH: usize = 16;

/// A parsed JSON value. Objects keep their members in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }
    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }
}

/// Parses one complete JSON document.
pub fn parse(input: &[u8]) -> Result<Json, &'static str> {
    let mut p = Parser { s: input, i: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err("trailing characters after the JSON value");
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn literal(&mut self, word: &'static [u8], v: Json) -> Result<Json, &'static str> {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err("invalid literal")
        }
    }
    fn value(&mut self, depth: usize) -> Result<Json, &'static str> {
        if depth > MAX_DEPTH {
            return Err("JSON nested too deep");
        }
        self.ws();
        match self.peek() {
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.bump() {
                        Some(b',') => continue,
                        Some(b']') => return Ok(Json::Arr(items)),
                        _ => return Err("expected , or ] in array"),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut members: Vec<(String, Json)> = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err("expected a string key");
                    }
                    let key = self.string()?;
                    self.ws();
                    if self.bump() != Some(b':') {
                        return Err("expected : after a key");
                    }
                    let v = self.value(depth + 1)?;
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err("duplicate key in object");
                    }
                    members.push((key, v));
                    self.ws();
                    match self.bump() {
                        Some(b',') => continue,
                        Some(b'}') => return Ok(Json::Obj(members)),
                        _ => return Err("expected , or } in object"),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err("expected a JSON value"),
        }
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }
    fn number(&mut self) -> Result<Json, &'static str> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        let text = self.s.get(start..self.i).ok_or("invalid number")?;
        Ok(Json::Num(to_f64(text)))
    }
    fn hex4(&mut self) -> Result<u32, &'static str> {
        let mut v = 0u32;
        for _ in 0..4 {
            let c = self.bump().ok_or("truncated \\u escape")?;
            let d = (c as char).to_digit(16).ok_or("invalid \\u escape")?;
            v = v * 16 + d;
        }
        Ok(v)
    }
    fn string(&mut self) -> Result<String, &'static str> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain bytes at once (the input is checked as UTF-8 below).
            let start = self.i;
            while matches!(self.peek(), Some(c) if c != b'"' && c != b'\\' && c >= 0x20) {
                self.i += 1;
            }
            let run = self.s.get(start..self.i).ok_or("invalid string")?;
            out.push_str(std::str::from_utf8(run).map_err(|_| "string is not UTF-8")?);
            match self.bump() {
                Some(b'"') => return Ok(out),
                Some(b'\\') => {
                    let c = match self.bump().ok_or("truncated escape")? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.bump() != Some(b'\\') || self.bump() != Some(b'u') {
                                    return Err("unpaired surrogate");
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err("unpaired surrogate");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or("unpaired surrogate")?
                        }
                        _ => return Err("invalid escape"),
                    };
                    out.push(c);
                }
                _ => return Err("unterminated string or control character in string"),
            }
        }
    }
}

/// The value of a number the grammar already accepted: up to 19 significant digits
/// exactly, scaled by its decimal exponent. Within a few ulps of the correctly rounded
/// value — exact for the integers below 2⁵³ that NumericDates are.
fn to_f64(text: &[u8]) -> f64 {
    let (neg, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mut mantissa, mut digits, mut exp10) = (0u64, 0u32, 0i32);
    let mut fraction = false;
    let mut iter = rest.iter();
    for &c in iter.by_ref() {
        match c {
            b'0'..=b'9' => {
                if digits < 19 {
                    mantissa = mantissa * 10 + u64::from(c - b'0');
                    if mantissa > 0 {
                        digits += 1;
                    }
                    if fraction {
                        exp10 -= 1;
                    }
                } else if !fraction {
                    exp10 += 1;
                }
            }
            b'.' => fraction = true,
            _ => break, // `e` or `E`
        }
    }
    let mut exp_neg = false;
    let mut exp = 0i32;
    for &c in iter {
        match c {
            b'-' => exp_neg = true,
            b'+' => {}
            d => exp = exp.saturating_mul(10).saturating_add(i32::from(d - b'0')),
        }
    }
    exp10 = exp10.saturating_add(if exp_neg { -exp } else { exp });
    let v = if exp10 >= 0 {
        mantissa as f64 * 10f64.powi(exp10.min(400))
    } else {
        mantissa as f64 / 10f64.powi((-exp10).min(400))
    };
    if neg {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_serde(v: &Json) -> serde_json::Value {
        match v {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => (*b).into(),
            Json::Num(n) => serde_json::Number::from_f64(*n).map(serde_json::Value::Number).unwrap_or_default(),
            Json::Str(s) => s.clone().into(),
            Json::Arr(a) => a.iter().map(to_serde).collect(),
            Json::Obj(m) => m.iter().map(|(k, v)| (k.clone(), to_serde(v))).collect(),
        }
    }

    /// Equal, numbers within a relative 1e-12 (see `to_f64`).
    fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (a, b) {
            (V::Number(x), V::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300)
            }
            (V::Array(x), V::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
            (V::Object(x), V::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    #[test]
    fn numbers_without_the_float_parser() {
        for (text, want) in [
            ("0", 0.0),
            ("-0", 0.0),
            ("1700000000", 1.7e9),
            ("1.7e9", 1.7e9),
            ("17E+8", 1.7e9),
            ("2.5", 2.5),
            ("-12.75e-2", -0.1275),
            ("123456789012345678901234", 1.2345678901234568e23),
            ("0.000001", 1e-6),
            ("9007199254740991", 9007199254740991.0),
        ] {
            let got = to_f64(text.as_bytes());
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1e-300), "{text}: {got} vs {want}");
        }
        assert_eq!(to_f64(b"1e999"), f64::INFINITY);
    }

    #[test]
    fn reads_what_tokens_hold() {
        let v = parse(br#" {"sub":"a\u00e9\ud83d\ude00","exp":1.7e9,"aud":["x","y"],"n":null,"t":true,"neg":-0.5} "#)
            .expect("valid");
        assert_eq!(v.get("sub").and_then(Json::as_str), Some("aé😀"));
        assert_eq!(v.get("exp").and_then(Json::as_f64), Some(1.7e9));
        assert_eq!(v.get("aud").and_then(Json::as_array).map(<[Json]>::len), Some(2));
        assert_eq!(v.get("neg").and_then(Json::as_f64), Some(-0.5));
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn refuses_what_it_should() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":1,}",
            b"[1,]",
            b"01",
            b"1.",
            b"-",
            b".5",
            b"1e",
            b"nul",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"a\nb\"",
            b"{\"a\":1}{",
            b"{\"a\":1,\"a\":2}",
            b"{a:1}",
            b"\"\xff\"",
            b"'x'",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        assert!(parse(deep.as_bytes()).is_err());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    /// Agrees with serde_json on 20,000 random documents and never panics on their
    /// mutations (duplicate keys aside, which serde_json accepts and this refuses).
    #[test]
    fn agrees_with_serde_json_on_random_documents() {
        let mut x: u64 = 0x1234_5678;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        fn gen(next: &mut dyn FnMut() -> u64, depth: usize) -> serde_json::Value {
            match next() % if depth > 3 { 4 } else { 6 } {
                0 => serde_json::Value::Null,
                1 => next().is_multiple_of(2).into(),
                2 => serde_json::json!((next() % 2_000_000) as f64 / 7.0 - 100_000.0),
                3 => {
                    let n = next() % 6;
                    (0..n).map(|_| char::from_u32((next() % 0x2FF) as u32).unwrap_or('?')).collect::<String>().into()
                }
                4 => (0..next() % 4).map(|_| gen(next, depth + 1)).collect(),
                _ => (0..next() % 4).map(|i| (format!("k{i}"), gen(next, depth + 1))).collect(),
            }
        }
        for _ in 0..20_000 {
            let doc = gen(&mut next, 0);
            let text =
                if next() % 2 == 0 { doc.to_string() } else { serde_json::to_string_pretty(&doc).unwrap_or_default() };
            let parsed = parse(text.as_bytes()).expect("valid JSON parses");
            assert!(same(&to_serde(&parsed), &doc), "{text}");
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
                let _ = parse(&bytes);
            }
        }
    }
}
