//! Every guest crate is used by a test: a guest nobody runs is dead weight that still builds.

use tests::guests::guest_names;

/// The guests the integration tests run; `every_guest_is_used` keeps this list honest.
const USED: &[&str] = &["audit-files", "compat-0-1-0", "forbidden", "probe"];

#[test]
fn every_guest_is_used() {
    let names: Vec<&str> = guest_names().iter().map(String::as_str).collect();
    assert_eq!(
        names, USED,
        "a guest crate was added or removed: use it in a test and list it here"
    );
}
