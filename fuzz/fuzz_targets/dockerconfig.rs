//! A user-supplied `.dockerconfigjson`: never a panic, and whatever parses renders to a
//! document that parses back to the same credentials.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regcred_refresher::dockerconfig::{parse, render};

fuzz_target!(|data: &[u8]| {
    let Ok(creds) = parse(data) else {
        return;
    };
    let doc = render(creds.iter().map(|c| ("fuzz", c))).expect("parsed servers are unique");
    let back = parse(&doc).expect("a rendered document parses");
    assert_eq!(back.len(), creds.len());
    for (a, b) in creds.iter().zip(&back) {
        assert_eq!(a.server, b.server);
        assert_eq!(a.username, b.username);
        assert_eq!(a.password(), b.password());
        assert_eq!(a.email, b.email);
    }
});
