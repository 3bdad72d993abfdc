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

/// Past this many powers of ten either way a number is 0 or infinite whatever its
/// (at most 19) significant digits: f64 spans about 1e-324 to 1e308. Clamping the
/// exponent there changes no value, and keeps its negation and `powi` in range for any
/// exponent a token may write, `e-2147483648` and beyond included.
const MAX_SCALE: i32 = 400;

/// Below this power of ten a divisor of `10^-exp` would itself overflow f64; the scaling
/// divides in two steps instead, so a result in the subnormal range is not lost to 0.
const ONE_STEP_SCALE: i32 = 300;

/// The value of a number the grammar already accepted: up to 19 significant digits
/// exactly, scaled by its decimal exponent. Within a few ulps of the correctly rounded
/// value — exact for the integers below 2⁵³ that NumericDates are. An exponent too large
/// to mean anything gives what JavaScript's `JSON.parse` gives, ±0 or ±infinity; the
/// claim checks then refuse infinite and far-off dates (`jwt::MAX_NUMERIC_DATE`).
fn to_f64(text: &[u8]) -> f64 {
    let (neg, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exp10) = decimal(rest);
    let v = if mantissa == 0 { 0.0 } else { scale(mantissa as f64, exp10) };
    if neg {
        -v
    } else {
        v
    }
}

/// A non-negative number's text as `mantissa × 10^exp10`: the first 19 significant
/// digits (more do not fit a u64, nor change an f64), the rest counted in the exponent.
/// Every step saturates, so no text, however long, overflows.
fn decimal(text: &[u8]) -> (u64, i32) {
    let (mut mantissa, mut digits, mut exp10) = (0u64, 0u32, 0i32);
    let mut fraction = false;
    let mut iter = text.iter();
    for &c in iter.by_ref() {
        match c {
            b'0'..=b'9' => {
                if digits < 19 {
                    mantissa = mantissa * 10 + u64::from(c - b'0');
                    if mantissa > 0 {
                        digits += 1;
                    }
                    if fraction {
                        exp10 = exp10.saturating_sub(1);
                    }
                } else if !fraction {
                    exp10 = exp10.saturating_add(1);
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
            d => exp = exp.saturating_mul(10).saturating_add(i32::from(d.wrapping_sub(b'0'))),
        }
    }
    // `exp` is at most i32::MAX, so its negation cannot overflow; the sum saturates.
    (mantissa, exp10.saturating_add(if exp_neg { -exp } else { exp }))
}

/// `m × 10^exp10` for a mantissa `m ≥ 1`.
fn scale(m: f64, exp10: i32) -> f64 {
    let e = exp10.clamp(-MAX_SCALE, MAX_SCALE);
    if e >= 0 {
        m * 10f64.powi(e)
    } else if e >= -ONE_STEP_SCALE {
        m / 10f64.powi(-e)
    } else {
        m / 10f64.powi(ONE_STEP_SCALE) / 10f64.powi(-e - ONE_STEP_SCALE)
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

    /// Exponents far past f64's range: 0 or infinity, as `JSON.parse` gives, never an
    /// overflow (with overflow checks on, `0.1e-2147483648` used to panic: the exponent
    /// reached i32::MIN and was negated).
    #[test]
    fn absurd_exponents_give_zero_or_infinity() {
        for (text, want) in [
            ("0.1e-2147483648", 0.0),
            ("0.1e-2147483647", 0.0),
            ("1e-99999999999999999999", 0.0),
            ("-1e-2147483649", -0.0),
            ("1e2147483647", f64::INFINITY),
            ("10e2147483647", f64::INFINITY),
            ("-1e99999999999999999999", f64::NEG_INFINITY),
            ("0e400", 0.0),
            ("0e2147483648", 0.0),
            ("1e-320", 1e-320),
            ("123456789e-330", 123456789e-330),
        ] {
            assert_eq!(to_f64(text.as_bytes()), want, "{text}");
            assert_eq!(parse(text.as_bytes()), Ok(Json::Num(want)), "{text}");
        }
        let long_fraction = format!("0.{}1e-2147483648", "0".repeat(5_000));
        assert_eq!(to_f64(long_fraction.as_bytes()), 0.0);
        let long_integer = format!("1{}e2147483647", "0".repeat(5_000));
        assert_eq!(to_f64(long_integer.as_bytes()), f64::INFINITY);
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

    mod properties {
        //! Property tests: proptest generates the inputs and, on a failure, shrinks them to
        //! a small one that still fails. A few hundred cases each keep the suite fast.
        use super::*;
        use proptest::prelude::*;

        /// Cases per property: enough to reach every branch of the reader many times
        /// over, few enough that the module runs in about a second.
        const CASES: u32 = 512;

        /// JSON number text: every part of the grammar, with exponents from small to far
        /// past i32 (the overflow class `0.1e-2147483648` was in).
        fn number_text() -> impl Strategy<Value = String> {
            let int = prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,25}"];
            let frac = prop::option::of("[0-9]{1,25}");
            let exp = prop::option::of(("[eE]", "[+-]?", prop_oneof!["[0-9]{1,3}", "[0-9]{4,12}"]));
            ("-?", int, frac, exp).prop_map(|(sign, int, frac, exp)| {
                let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
                let exp = exp.map(|(e, s, d)| format!("{e}{s}{d}")).unwrap_or_default();
                format!("{sign}{int}{frac}{exp}")
            })
        }

        /// Any JSON document serde_json can write, a few levels deep.
        fn document() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<String>().prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(any::<String>(), inner, 0..4)
                        .prop_map(|m| m.into_iter().collect::<serde_json::Map<_, _>>().into()),
                ]
            })
        }

        /// Within `to_f64`'s few ulps; subnormal results within a few of their spacing.
        fn close(got: f64, want: f64) -> bool {
            (got - want).abs() <= 1e-12 * got.abs().max(want.abs()).max(f64::MIN_POSITIVE)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = parse(&bytes);
            }

            #[test]
            fn arbitrary_strings_never_panic(text in any::<String>()) {
                let _ = parse(text.as_bytes());
            }

            /// Strings of JSON's own punctuation reach far more of the grammar than
            /// arbitrary text does.
            #[test]
            fn json_shaped_noise_never_panics(text in r#"[\[\]{}",:0-9eE.+\- tfnrul\\u]{0,64}"#) {
                let _ = parse(text.as_bytes());
            }

            /// Where serde_json reads a number, this reader agrees; where serde_json
            /// refuses a valid one (out of f64's range), this reader gives ±infinity.
            #[test]
            fn numbers_agree_with_serde_json(text in number_text()) {
                let Ok(Json::Num(got)) = parse(text.as_bytes()) else {
                    return Err(TestCaseError::fail(format!("{text} did not parse as a number")));
                };
                match serde_json::from_str::<f64>(&text) {
                    Ok(want) => prop_assert!(close(got, want), "{text}: {got} vs {want}"),
                    Err(_) => prop_assert!(got.is_infinite(), "{text}: {got}, serde_json refused it"),
                }
            }

            #[test]
            fn documents_agree_with_serde_json(doc in document(), pretty in any::<bool>()) {
                let text = if pretty { serde_json::to_string_pretty(&doc) } else { serde_json::to_string(&doc) };
                let text = text.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let parsed = parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                prop_assert!(same(&to_serde(&parsed), &doc), "{text}");
            }
        }
    }
}
