use super::*;

fn b64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c.iter().fold(0u32, |a, &x| (a << 8) | x as u32) << (8 * (3 - c.len()));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The base64url modulus of exactly `bits` bits.
fn modulus(bits: usize) -> String {
    let mut n = vec![0u8; bits.div_ceil(8)];
    n[0] = 1 << ((bits - 1) % 8);
    *n.last_mut().unwrap() |= 1;
    b64(&n)
}

fn rsa(bits: usize, extra: &str) -> String {
    format!(r#"{{"kty":"RSA","e":"AQAB","n":"{}"{extra}}}"#, modulus(bits))
}

fn set(keys: &[String]) -> Vec<u8> {
    format!(r#"{{"keys":[{}]}}"#, keys.join(",")).into_bytes()
}

#[test]
fn bit_lengths_ignore_leading_zero_bytes() {
    assert_eq!(bit_length(&[]), 0);
    assert_eq!(bit_length(&[0, 0]), 0);
    assert_eq!(bit_length(&[1]), 1);
    assert_eq!(bit_length(&[0, 0x80, 0]), 16);
    assert_eq!(bit_length(&[0x7f, 0xff]), 15);
    for bits in [2047, 2048, 3072, 4096, 4097] {
        let n = b64url_decode(modulus(bits).as_bytes()).unwrap();
        assert_eq!(bit_length(&n), bits);
        // A modulus written with a leading zero byte (as some encoders do) is no longer.
        assert_eq!(bit_length(&[&[0u8][..], &n].concat()), bits);
    }
}

#[test]
fn rsa_keys_from_2048_to_4096_bits_verify_rs256_and_ps256() {
    let s = parse_key_set(&set(&[rsa(2048, ""), rsa(3072, r#","alg":"RS256""#), rsa(4096, r#","alg":"PS256""#)]))
        .expect("a set");
    let algs: Vec<Vec<Alg>> = s.keys.iter().map(|k| k.algs.clone()).collect();
    assert_eq!(algs, vec![vec![Alg::Rs256, Alg::Ps256], vec![Alg::Rs256], vec![Alg::Ps256]]);
    assert!(s.skipped.is_empty());
    for k in &s.keys {
        assert!(!k.verifies(Alg::Es256) && !k.verifies(Alg::Hs256) && !k.verifies(Alg::EdDsa));
        assert_eq!(k.material.jwk_fields().first(), Some(&("kty", "RSA")));
    }
}

#[test]
fn keys_the_snippet_does_not_verify_with_are_skipped_with_their_reason() {
    let skipped = |key: String| {
        let s = parse_key_set(&set(std::slice::from_ref(&key))).expect(&key);
        assert!(s.keys.is_empty(), "{key}");
        s.skipped.into_iter().next().map(|s| (s.reason, s.malformed)).unwrap()
    };
    for (key, why) in [
        (rsa(1024, ""), "1024 bits"),
        (rsa(2047, ""), "2047 bits"),
        (rsa(4097, ""), "4097 bits"),
        (rsa(8192, ""), "8192 bits"),
        (rsa(2048, r#","use":"enc""#), "use is \"enc\""),
        (rsa(2048, r#","alg":"RS512""#), "alg RS512"),
        (rsa(2048, r#","alg":"PS384""#), "alg PS384"),
        (rsa(2048, r#","key_ops":["encrypt"]"#), "key_ops"),
        (r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#.into(), "P-384"),
        (r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#.into(), "X25519"),
        (r#"{"kty":"oct","alg":"HS256"}"#.into(), "kty oct"),
        (r#"{"kty":"EC2"}"#.into(), "kty EC2"),
    ] {
        let (reason, malformed) = skipped(key.clone());
        assert!(reason.contains(why) && !malformed, "{key}: {reason}");
    }
    for (key, why) in [
        (r#"{"kty":"RSA","e":"AQAB"}"#.to_owned(), "no n"),
        (rsa(2048, "").replace("AQAB", "AQAC"), "exponent"),
        (rsa(2048, r#","alg":"ES256""#), "does not fit an RSA key"),
        (r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#.into(), "32 bytes"),
        (r#"{"kty":"OKP","crv":"Ed25519","x":"AA","alg":"ES256"}"#.into(), "does not fit"),
        (r#"{"crv":"P-256"}"#.into(), "no kty"),
        (r#"{"kty":5}"#.into(), "kty is not a string"),
        ("[1]".into(), "not a JSON object"),
    ] {
        let (reason, malformed) = skipped(key.clone());
        assert!(reason.contains(why) && malformed, "{key}: {reason}");
    }
}

#[test]
fn a_set_is_refused_whole_only_when_it_cannot_be_trusted() {
    assert!(parse_key_set(b"<html>").expect_err("garbage").contains("not JSON"));
    assert!(parse_key_set(br#"{"keys":{}}"#).is_err());
    assert!(parse_key_set(br#"[]"#).is_err());
    let private = rsa(2048, r#","d":"AQAB""#);
    assert!(parse_key_set(&set(&[private])).expect_err("private").contains("private key"));
    let secret = r#"{"kty":"oct","k":"c2VjcmV0"}"#.to_owned();
    assert!(parse_key_set(&set(&[secret])).expect_err("secret").contains("private key"));
    let many = vec![rsa(1024, ""); MAX_KEY_SET_ENTRIES + 1];
    assert!(parse_key_set(&set(&many)).expect_err("entries").contains("at most"));
    let usable = vec![rsa(2048, ""); MAX_JWKS_KEYS + 1];
    assert!(parse_key_set(&set(&usable)).expect_err("usable").contains("usable"));
    // Mostly skipped, within the entry bound: read.
    let mut mixed = vec![rsa(1024, ""); MAX_KEY_SET_ENTRIES - 1];
    mixed.push(rsa(2048, r#","kid":"good""#));
    let s = parse_key_set(&set(&mixed)).expect("read");
    assert_eq!((s.keys.len(), s.skipped.len(), s.kids()), (1, MAX_KEY_SET_ENTRIES - 1, "good".to_owned()));
}

#[test]
fn a_static_set_refuses_typos_but_skips_other_kinds() {
    let typo = String::from_utf8(set(&[rsa(2048, ""), r#"{"kty":"RSA","n":"AQAB"}"#.into()])).unwrap();
    assert!(parse_static(&typo).expect_err("typo").contains("AUTH_JWKS key 1: no e"));
    let other = String::from_utf8(set(&[rsa(2048, ""), rsa(2048, r#","use":"enc","kid":"e1""#)])).unwrap();
    let s = parse_static(&other).expect("usable");
    assert_eq!(s.skipped_line().as_deref(), Some("skipped key 1 (kid \"e1\"): use is \"enc\", not \"sig\""));
    let nothing = String::from_utf8(set(&[rsa(1024, "")])).unwrap();
    assert!(parse_static(&nothing).expect_err("none").contains("1024 bits"));
}

#[test]
fn fingerprints_tell_keys_apart_whatever_their_kid() {
    let s = parse_key_set(&set(&[rsa(2048, r#","kid":"a""#), rsa(2048, r#","kid":"b""#), rsa(3072, r#","kid":"a""#)]))
        .unwrap();
    let [a, b, c] = [&s.keys[0], &s.keys[1], &s.keys[2]].map(|k| k.material.fingerprint());
    assert_eq!(a, b, "the same key under two kids");
    assert_ne!(a, c, "a new key under an old kid");
    assert!(s.keys[0].fits(Alg::Rs256, Some("a")) && !s.keys[0].fits(Alg::Rs256, Some("b")));
    assert!(s.keys[0].fits(Alg::Ps256, None));
}

/// A set made by an independent implementation (`jose`, through
/// `test-client/jose/jose.mjs`): RS256 2048, PS256 4096, ES256 and EdDSA public keys.
#[test]
fn a_set_made_by_jose_is_read_whole() {
    let s = parse_key_set(include_bytes!("testdata/jose-set.json")).expect("jose's set");
    let got: Vec<(Option<&str>, Vec<Alg>)> = s.keys.iter().map(|k| (k.kid.as_deref(), k.algs.clone())).collect();
    assert_eq!(
        got,
        vec![
            (Some("rs1"), vec![Alg::Rs256]),
            (Some("ps1"), vec![Alg::Ps256]),
            (Some("es1"), vec![Alg::Es256]),
            (Some("ed1"), vec![Alg::EdDsa]),
        ]
    );
    assert!(s.skipped.is_empty());
}
