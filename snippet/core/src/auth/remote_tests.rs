//! The remote key sets on a simulated clock: who fetches, who waits, what is served.

use super::*;

const COOLDOWN: u64 = DEFAULT_COOLDOWN_MS;
const X: &str = "eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg";

/// A set of EC P-256 keys with these `kid`s; `tag` makes the keys themselves differ.
fn body(kids: &[&str], tag: char) -> Vec<u8> {
    let y: String = std::iter::repeat_n(tag, 42).chain(std::iter::once('A')).collect();
    let keys: Vec<String> =
        kids.iter().map(|k| format!(r#"{{"kty":"EC","crv":"P-256","kid":"{k}","x":"{X}","y":"{y}"}}"#)).collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(",")).into_bytes()
}

fn ok(body: Vec<u8>, cache_control: Option<&str>) -> Result<Fetched, String> {
    Ok(Fetched { body, cache_control: cache_control.map(str::to_owned), age: None })
}

fn sets(n: usize) -> KeySets {
    let urls: Vec<String> = (0..n).map(|i| format!("https://idp{i}/jwks.json")).collect();
    KeySets::new(&urls, Limits::default())
}

fn lookup(k: &mut KeySets, set: usize, kid: &str, now: u64) -> Step {
    k.handle_lookup(set, Alg::Es256, Some(kid), now)
}

fn ticket(step: Step) -> Ticket {
    match step {
        Step::Fetch { ticket, timeout_ms, .. } => {
            assert_eq!(timeout_ms, FETCH_TIMEOUT_MS);
            ticket
        }
        other => panic!("expected a fetch, got {other:?}"),
    }
}

fn kids(step: &Step) -> Vec<String> {
    match step {
        Step::Keys(keys) => keys.iter().map(|k| k.kid.clone().unwrap_or_default()).collect(),
        other => panic!("expected keys, got {other:?}"),
    }
}

fn wakes(k: &mut KeySets) -> Vec<WaiterId> {
    std::iter::from_fn(|| k.poll_wake()).collect()
}

#[test]
fn concurrent_first_requests_share_one_fetch_and_are_all_woken() {
    let mut k = sets(1);
    let t = ticket(lookup(&mut k, 0, "a", 1_000));
    let mut waiting = Vec::new();
    for i in 0..50 {
        match lookup(&mut k, 0, "a", 1_000 + i) {
            Step::Wait { waiter, until } => {
                assert_eq!(until, 1_000 + FETCH_TIMEOUT_MS + REPORT_GRACE_MS, "each waiter's own deadline");
                assert!(k.waiting(waiter));
                waiting.push(waiter);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(wakes(&mut k).is_empty(), "nobody is woken before the answer");
    assert!(k.handle_fetched(t, ok(body(&["a"], 'y'), None), 1_200), "the keys changed");
    assert_eq!(wakes(&mut k), waiting, "every waiter, once, in order");
    assert!(waiting.iter().all(|w| !k.waiting(*w)));
    assert_eq!(kids(&lookup(&mut k, 0, "a", 1_300)), vec!["a"]);
    assert_eq!(k.counts(0), SetCounts { fetches: 1, failures: 0, keys: 1 });
    assert!(k.poll_log().is_some_and(|l| l.contains("1 keys (a)") && l.contains("fresh for 600 s")));
}

#[test]
fn a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown() {
    let mut k = sets(1);
    let t = ticket(lookup(&mut k, 0, "a", 0));
    k.handle_fetched(t, ok(body(&["a"], 'y'), None), 10);
    let (mut fetches, mut refused, mut starts) = (0, 0, Vec::new());
    // One made-up kid every 10 ms for 95 s; each fetch answers 50 ms later.
    let mut pending: Option<(Ticket, u64)> = None;
    for i in 0..9_500u64 {
        let now = 100 + i * 10;
        if let Some((t, at)) = pending {
            if now >= at {
                k.handle_fetched(t, ok(body(&["a"], 'y'), None), now);
                pending = None;
            }
        }
        match lookup(&mut k, 0, &format!("made-up-{i}"), now) {
            Step::Fetch { ticket, .. } => {
                fetches += 1;
                starts.push(now);
                pending = Some((ticket, now + 50));
            }
            Step::Wait { waiter, .. } => k.handle_gone(waiter),
            Step::Refuse(e) => {
                assert_eq!(e.status(), 401, "the set is there; the kid is not");
                refused += 1;
            }
            Step::Keys(_) => panic!("a made-up kid found keys"),
        }
    }
    assert_eq!(fetches, 3, "95 s of flood after the first fetch, 30 s cooldown: {starts:?}");
    assert_eq!(k.counts(0).fetches, 4);
    assert!(starts.windows(2).all(|w| w[1] - w[0] >= COOLDOWN), "{starts:?}");
    assert!(refused > 9_000);
    // The real kid was served throughout.
    assert_eq!(kids(&lookup(&mut k, 0, "a", 200_000)).len(), 1);
}

#[test]
fn max_age_is_honoured_within_its_bounds() {
    let l = Limits::default();
    assert_eq!(freshness_ms(None, None, l), DEFAULT_MAX_AGE_MS);
    assert_eq!(freshness_ms(Some("public, max-age=120"), None, l), 120_000);
    assert_eq!(freshness_ms(Some("max-age=\"120\", must-revalidate"), Some("20"), l), 100_000);
    assert_eq!(freshness_ms(Some("MAX-AGE=5"), None, l), COOLDOWN, "at least the cooldown");
    assert_eq!(freshness_ms(Some("no-store"), None, l), COOLDOWN);
    assert_eq!(freshness_ms(Some("max-age=600, no-cache"), None, l), COOLDOWN);
    assert_eq!(freshness_ms(Some("max-age=21600"), None, l), MAX_MAX_AGE_MS, "Google's 6 h: at most 1 h");
    assert_eq!(freshness_ms(Some("max-age=nonsense"), None, l), COOLDOWN);
    assert_eq!(freshness_ms(Some("max-age=99999999999999999999"), None, l), MAX_MAX_AGE_MS);
    assert_eq!(freshness_ms(Some("max-age=100"), Some("500"), l), COOLDOWN);
    assert_eq!(freshness_ms(Some("private"), None, l), DEFAULT_MAX_AGE_MS);

    let mut k = sets(1);
    let t = ticket(lookup(&mut k, 0, "a", 0));
    k.handle_fetched(t, ok(body(&["a"], 'y'), Some("max-age=120")), 0);
    assert!(matches!(lookup(&mut k, 0, "a", 119_999), Step::Keys(_)));
    let refresh = ticket(lookup(&mut k, 0, "a", 120_000));
    // While it is under way, a token of a known kid is served the current keys at once.
    assert!(matches!(lookup(&mut k, 0, "a", 120_001), Step::Keys(_)));
    assert!(!k.handle_fetched(refresh, ok(body(&["a"], 'y'), Some("max-age=120")), 120_050), "the same keys");
    assert!(matches!(lookup(&mut k, 0, "a", 240_049), Step::Keys(_)));
}

#[test]
fn rotation_is_picked_up_by_the_first_token_of_the_new_key() {
    let mut k = sets(1);
    let t = ticket(lookup(&mut k, 0, "old", 0));
    k.handle_fetched(t, ok(body(&["old"], 'y'), None), 0);
    // The provider rotated: a token signed with the new key arrives 40 s later.
    let t = ticket(lookup(&mut k, 0, "new", 40_000));
    assert!(k.handle_fetched(t, ok(body(&["new"], 'z'), None), 40_100));
    assert_eq!(kids(&lookup(&mut k, 0, "new", 40_200)), vec!["new"]);
    // The old key is gone with it: its tokens are refused, without another fetch.
    assert_eq!(
        lookup(&mut k, 0, "old", 40_300),
        Step::Refuse(AuthError::Invalid("no key with this kid and alg in the issuer's key set"))
    );
    assert_eq!(k.counts(0).fetches, 2);
}

#[test]
fn an_outage_is_served_from_the_last_good_keys_for_the_stale_window_then_503() {
    let urls = vec!["https://idp/jwks.json".to_owned()];
    let limits = Limits { cooldown_ms: 2_000, stale_ms: 5_000 };
    let mut k = KeySets::new(&urls, limits);
    let t = ticket(lookup(&mut k, 0, "a", 0));
    k.handle_fetched(t, ok(body(&["a"], 'y'), Some("max-age=1")), 0);
    // Fresh for the cooldown (max-age=1 is raised to it), usable 5 s past that.
    let mut served_stale = 0;
    let mut attempts = Vec::new();
    let mut now = 0;
    let refusal = loop {
        now += 100;
        match lookup(&mut k, 0, "a", now) {
            Step::Keys(_) if now >= 2_000 => served_stale += 1,
            Step::Keys(_) => {}
            Step::Fetch { ticket, .. } => {
                attempts.push(now);
                k.handle_fetched(ticket, Err("HTTP 500".into()), now + 10);
            }
            Step::Refuse(e) => break e,
            Step::Wait { .. } => panic!("nobody else is fetching"),
        }
    };
    assert_eq!(now, 7_000, "usable until freshness (2 s) + stale window (5 s)");
    assert!(k.usable(0, 6_999) && !k.usable(0, 7_000), "what the glue asks before trusting a cached verdict");
    assert_eq!(attempts, vec![2_000, 4_100, 6_200], "one attempt per cooldown after the last one ended");
    assert!(served_stale >= 45, "{served_stale}");
    assert_eq!(refusal.status(), 503);
    assert_eq!(refusal.retry_after_secs(), Some(2), "the next attempt is 1.21 s away");
    assert!(k.poll_log().is_some_and(|l| l.contains("1 keys")));
    let failure = k.poll_log().unwrap_or_default();
    assert!(failure.contains("HTTP 500") && failure.contains("last good keys serve"), "{failure}");
    // The provider is back: the next attempt (after the cooldown) restores service.
    let t = ticket(lookup(&mut k, 0, "a", 8_300));
    k.handle_fetched(t, ok(body(&["a"], 'y'), None), 8_400);
    assert!(matches!(lookup(&mut k, 0, "a", 8_500), Step::Keys(_)));
    assert_eq!(k.counts(0), SetCounts { fetches: 5, failures: 3, keys: 1 });
}

#[test]
fn garbage_and_empty_sets_are_failures_that_keep_the_last_good_keys() {
    let mut k = sets(1);
    let t = ticket(lookup(&mut k, 0, "a", 0));
    k.handle_fetched(t, ok(body(&["a"], 'y'), None), 0);
    let mut at = 0;
    for bad in [
        b"<html>oops</html>".to_vec(),
        br#"{"keys":[]}"#.to_vec(),
        br#"{"keys":[{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}"#.to_vec(),
        vec![b' '; MAX_KEY_SET_BYTES + 1],
    ] {
        at += COOLDOWN;
        let t = ticket(lookup(&mut k, 0, "unknown", at));
        assert!(!k.handle_fetched(t, ok(bad, None), at));
        assert_eq!(kids(&lookup(&mut k, 0, "a", at + 1)), vec!["a"], "still served");
    }
    let logs: Vec<String> = std::iter::from_fn(|| k.poll_log()).collect();
    assert!(logs.iter().filter(|l| l.contains("fetch failed")).count() == 4, "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("use is \\\"enc\\\"") || l.contains("use is \"enc\"")), "{logs:?}");
}

#[test]
fn a_fetcher_that_never_reports_is_given_up_and_its_waiters_time_out() {
    let mut k = sets(1);
    let lost = ticket(lookup(&mut k, 0, "a", 0));
    let Step::Wait { waiter, until } = lookup(&mut k, 0, "a", 10) else { panic!("waits") };
    // The waiter's own timer fires at `until`; it asks again and the fetch is given up.
    assert!(matches!(lookup(&mut k, 0, "a", until - 1), Step::Wait { .. }));
    let step = lookup(&mut k, 0, "a", until);
    assert_eq!(
        step.clone(),
        Step::Refuse(AuthError::Unavailable("the identity provider's keys cannot be fetched now", COOLDOWN)),
        "the cooldown runs from the give-up"
    );
    assert!(!k.waiting(waiter), "woken by the give-up");
    assert!(wakes(&mut k).contains(&waiter));
    // A report that comes after all is ignored: that fetch is over.
    assert!(!k.handle_fetched(lost, ok(body(&["a"], 'y'), None), until + 1));
    assert_eq!(k.counts(0), SetCounts { fetches: 1, failures: 1, keys: 0 });
    // After the cooldown a new request fetches again.
    assert!(matches!(lookup(&mut k, 0, "a", until + COOLDOWN - 1), Step::Refuse(_)));
    assert!(matches!(lookup(&mut k, 0, "a", until + COOLDOWN), Step::Fetch { .. }));
}

#[test]
fn two_issuers_sharing_a_kid_never_see_each_others_keys() {
    let mut k = sets(2);
    let a = ticket(lookup(&mut k, 0, "shared", 0));
    let b = ticket(lookup(&mut k, 1, "shared", 0));
    assert_ne!(a, b, "one fetch per set");
    k.handle_fetched(a, ok(body(&["shared"], 'a'), None), 5);
    // Set 1 is still being fetched: its token waits, it does not borrow set 0's key.
    assert!(matches!(lookup(&mut k, 1, "shared", 6), Step::Wait { .. }));
    k.handle_fetched(b, ok(body(&["shared"], 'b'), None), 7);
    let key = |k: &mut KeySets, set| match lookup(k, set, "shared", 8) {
        Step::Keys(keys) => keys[0].material.clone(),
        other => panic!("{other:?}"),
    };
    assert_ne!(key(&mut k, 0), key(&mut k, 1));
    assert_eq!(k.totals().fetches, 2);
}

#[test]
fn a_fetch_longer_than_the_cooldown_is_not_followed_at_once_by_another() {
    let urls = vec!["https://idp/jwks.json".to_owned()];
    let mut k = KeySets::new(&urls, Limits { cooldown_ms: 1_000, stale_ms: 0 });
    let t = ticket(lookup(&mut k, 0, "a", 0));
    // A stalled provider: the fetcher gives up at its 5 s timeout.
    k.handle_fetched(t, Err("no answer within 5 s".into()), FETCH_TIMEOUT_MS);
    let refused = lookup(&mut k, 0, "a", FETCH_TIMEOUT_MS);
    assert!(matches!(refused, Step::Refuse(AuthError::Unavailable(_, 1_000))), "{refused:?}");
    assert!(matches!(lookup(&mut k, 0, "a", FETCH_TIMEOUT_MS + 999), Step::Refuse(_)));
    assert!(matches!(lookup(&mut k, 0, "a", FETCH_TIMEOUT_MS + 1_000), Step::Fetch { .. }));
}

#[test]
fn a_dropped_waiter_is_forgotten() {
    let mut k = sets(1);
    let t = ticket(lookup(&mut k, 0, "a", 0));
    let Step::Wait { waiter, .. } = lookup(&mut k, 0, "a", 1) else { panic!("waits") };
    k.handle_gone(waiter);
    assert!(!k.waiting(waiter));
    k.handle_fetched(t, ok(body(&["a"], 'y'), None), 2);
    assert!(wakes(&mut k).is_empty());
}

/// Random traffic on two sets, random answers and lost fetchers: never two fetches of a
/// set less than a cooldown apart, never two at once, and no waiter left behind once its
/// fetch is over.
#[test]
fn random_traffic_keeps_every_bound() {
    let mut x: u64 = 7;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut k = sets(2);
    let mut now = 0;
    let mut in_flight: Vec<(Ticket, usize, u64)> = Vec::new();
    let mut last_start = [None::<u64>; 2];
    let mut waiters: Vec<(WaiterId, u64)> = Vec::new();
    for _ in 0..200_000 {
        now += rnd(400);
        let set = rnd(2) as usize;
        // Finish fetches whose time has come (a tenth are never reported).
        let (due, later): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|(_, _, at)| *at <= now);
        in_flight = later;
        for (t, s, _) in due {
            let r = match rnd(10) {
                0 => continue,
                1..=3 => Err("HTTP 503".to_owned()),
                4 => ok(b"garbage".to_vec(), None),
                _ => ok(body(&["a", "b"], if rnd(2) == 0 { 'y' } else { 'z' }), Some("max-age=60")),
            };
            k.handle_fetched(t, r, now);
            let _ = s;
        }
        while let Some(w) = k.poll_wake() {
            waiters.retain(|(x, _)| *x != w);
        }
        let kid = ["a", "b", "c"][rnd(3) as usize];
        match lookup(&mut k, set, kid, now) {
            Step::Fetch { ticket, .. } => {
                if let Some(prev) = last_start[set] {
                    assert!(now >= prev + COOLDOWN, "set {set}: fetches at {prev} and {now}");
                }
                assert!(!in_flight.iter().any(|(_, s, _)| *s == set), "two fetches of set {set} at once");
                last_start[set] = Some(now);
                in_flight.push((ticket, set, now + rnd(FETCH_TIMEOUT_MS)));
            }
            Step::Wait { waiter, until } => {
                assert!(until <= now + FETCH_TIMEOUT_MS + REPORT_GRACE_MS);
                waiters.push((waiter, until));
            }
            Step::Keys(keys) => assert!(!keys.is_empty()),
            Step::Refuse(e) => assert!(matches!(e.status(), 401 | 503)),
        }
        // A waiter whose deadline passed asks again (as its timer makes it) and is done.
        let (expired, still): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(_, u)| *u <= now);
        waiters = still;
        for (w, _) in expired {
            k.handle_gone(w);
        }
    }
    assert!(k.totals().fetches > 100, "{:?}", k.totals());
}
