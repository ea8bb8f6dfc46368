//! The configuration file: any text is refused or accepted without a panic, and every refusal
//! carries a fix (the product's promise for exit code 2).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = regcred_refresher::config::parse_and_validate_str(text) {
        let msg = e.to_string();
        assert!(msg.contains("fix:"), "an error without a fix: {msg}");
        assert!(!msg.contains('\n'), "an error on several lines: {msg}");
    }
});
