//! How the snippet reaches its backends, from two vars of which exactly one is set:
//!
//! - `BACKEND_URL`, a `ws://`/`wss://` template with `{tenant}`: the backends' public
//!   multiplexer endpoint, reached with the global `fetch` and the `BACKEND_TOKEN`
//!   bearer. Needs no binding, so it suits a Snippet or a Worker in another account.
//! - `BACKEND_BINDING`, the name of a Durable Object namespace binding (a class of
//!   another Worker, `script_name`): the tenant's object is `idFromName(tenant)` of that
//!   namespace, reached with the stub's `fetch`. Nothing of the backend need be public;
//!   the binding is the credential (only Workers its account binds to the class can reach
//!   an object), so `BACKEND_TOKEN` is optional there (sent if set).

use crate::tenant::PLACEHOLDER;

/// The URL a bound object is asked for: the host is ignored by a stub's `fetch`; the
/// object routes on the path, the same `/db/{tenant}/mux` its public Worker forwards.
pub const BINDING_MUX_URL: &str = "https://backend.binding/db/{tenant}/mux";

/// How the backends are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// By URL: the template (`BACKEND_URL`).
    Url(String),
    /// Through the Durable Object namespace binding of this name (`BACKEND_BINDING`).
    Binding(String),
}

impl Reach {
    /// The vars that choose it.
    pub const VARS: [&'static str; 2] = ["BACKEND_URL", "BACKEND_BINDING"];

    /// Reads `BACKEND_URL` and `BACKEND_BINDING` (blank counts as unset): exactly one.
    pub fn from_vars(url: Option<&str>, binding: Option<&str>) -> Result<Reach, String> {
        let url = url.map(str::trim).filter(|s| !s.is_empty());
        let binding = binding.map(str::trim).filter(|s| !s.is_empty());
        match (url, binding) {
            (Some(_), Some(_)) => Err("set BACKEND_URL or BACKEND_BINDING, not both: \
                 each names a different way to the backends (README, Deploy)"
                .into()),
            (None, None) => Err(format!(
                "neither BACKEND_URL nor BACKEND_BINDING is set: give the backends' multiplexer \
                 endpoint (e.g. wss://backend.example/db/{PLACEHOLDER}/mux) or the name of a Durable \
                 Object namespace binding to their class (README, Deploy)"
            )),
            (Some(url), None) => check_template(url).map(|()| Reach::Url(url.to_owned())),
            (None, Some(name)) if is_binding_name(name) => Ok(Reach::Binding(name.to_owned())),
            (None, Some(_)) => Err("BACKEND_BINDING must be a binding's name (letters, digits, _)".into()),
        }
    }

    /// `tenant`'s multiplexer endpoint.
    pub fn mux_url(&self, tenant: &str) -> String {
        match self {
            Reach::Url(template) => template.replace(PLACEHOLDER, tenant),
            Reach::Binding(_) => BINDING_MUX_URL.replace(PLACEHOLDER, tenant),
        }
    }

    /// `tenant`'s HTTP base beside its multiplexer endpoint, for fallbacks (then `/rpc` or
    /// `/query` is appended): `ws://host/db/t/mux` → `http://host/db/t`.
    pub fn http_base(&self, tenant: &str) -> String {
        let url = crate::http_url(&self.mux_url(tenant));
        let trimmed = url.trim_end_matches('/');
        trimmed.strip_suffix("/mux").unwrap_or(trimmed).to_owned()
    }

    /// The binding's name, when the backends are reached through one.
    pub fn binding(&self) -> Option<&str> {
        match self {
            Reach::Url(_) => None,
            Reach::Binding(name) => Some(name),
        }
    }
}

/// A name a binding can have in `wrangler.toml`, and so a key of `env`.
fn is_binding_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a `BACKEND_URL` template: `ws://` or `wss://`, and `{tenant}` in it.
fn check_template(url: &str) -> Result<(), String> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err("BACKEND_URL must be a ws:// or wss:// URL".into());
    }
    if !url.contains(PLACEHOLDER) {
        return Err(format!(
            "BACKEND_URL must contain {PLACEHOLDER} (e.g. wss://backend.example/db/{PLACEHOLDER}/mux): \
             without it every tenant would reach the same Durable Object"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_template_must_name_the_tenant() {
        let ok = Reach::from_vars(Some("wss://h/db/{tenant}/mux"), None).expect("a good template");
        assert_eq!(ok.mux_url("r1"), "wss://h/db/r1/mux");
        assert_eq!(ok.http_base("r1"), "https://h/db/r1");
        assert_eq!(
            Reach::from_vars(Some("ws://h:1/db/{tenant}/mux/"), None).map(|r| r.http_base("t")),
            Ok("http://h:1/db/t".to_owned())
        );
        assert_eq!(ok.binding(), None);
        assert!(Reach::from_vars(Some("ws://h/db/default/mux"), None).is_err());
        assert!(Reach::from_vars(Some("http://h/db/{tenant}/mux"), None).is_err());
    }

    #[test]
    fn exactly_one_way_is_set_and_blank_is_unset() {
        let neither = Reach::from_vars(Some(" "), Some("")).expect_err("neither");
        assert!(neither.contains("neither BACKEND_URL nor BACKEND_BINDING"), "{neither}");
        let both = Reach::from_vars(Some("wss://h/db/{tenant}/mux"), Some("BACKEND")).expect_err("both");
        assert!(both.contains("not both"), "{both}");
    }

    #[test]
    fn a_binding_asks_its_object_for_the_mux_path() {
        let bound = Reach::from_vars(None, Some("BACKEND")).expect("a binding name");
        assert_eq!(bound.binding(), Some("BACKEND"));
        assert_eq!(bound.mux_url("room-7"), "https://backend.binding/db/room-7/mux");
        assert_eq!(bound.http_base("room-7"), "https://backend.binding/db/room-7");
        for bad in ["1X", "a-b", "env.X", "a b"] {
            assert!(Reach::from_vars(None, Some(bad)).is_err(), "{bad}");
        }
    }
}
