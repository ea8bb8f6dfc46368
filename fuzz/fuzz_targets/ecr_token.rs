//! ECR's `authorizationToken` and `proxyEndpoint`: never a panic, a decoded token re-encodes to
//! itself, and a host never carries a path.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use regcred_refresher::providers::aws::decode_token;
use regcred_refresher::providers::ecr::registry_host;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((user, pass)) = decode_token(text) {
        let pass = pass.expose_secret();
        assert!(!user.is_empty() && !pass.is_empty());
        assert!(!user.contains(':'));
        let (user2, pass2) = decode_token(&STANDARD.encode(format!("{user}:{pass}"))).unwrap();
        assert_eq!((user2.as_str(), pass2.expose_secret()), (user.as_str(), pass));
    }
    // The input split in two: an endpoint and an optional account ID.
    let (endpoint, account) = match text.split_once('\0') {
        Some((e, a)) => (e, Some(a)),
        None => (text, None),
    };
    if let Ok(host) = registry_host(endpoint, account) {
        if account.is_none() {
            assert!(!host.is_empty(), "{endpoint:?}");
            assert!(!host.contains('/'), "{endpoint:?} -> {host:?}");
        }
    }
});
