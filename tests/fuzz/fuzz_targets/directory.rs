//! Fuzz target `directory`: the built-in CRM directory
//! (`crm::directory`): `Directory::parse` of a `contacts.csv` text and
//! `E164::normalize` of a caller's number.
//!
//! Input: the file's text (invalid UTF-8 is read lossily). Its first line
//! is also normalized as a number.
//!
//! Invariants checked (beyond "never panics"):
//! * a normalized number starts with `+` and has 4–15 digits after it, and
//!   normalizes again to itself;
//! * every contact of a parsed directory is found by its own phone and by
//!   its own account.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::crm::directory::{Directory, E164};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let first = text.lines().next().unwrap_or("");
    if let Some(n) = E164::normalize(first) {
        let s = n.as_str();
        assert!(s.starts_with('+'), "{s}");
        let digits = &s[1..];
        assert!(
            (4..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
            "{s}"
        );
        assert_eq!(E164::normalize(s).as_ref().map(E164::as_str), Some(s));
    }
    if let Ok(dir) = Directory::parse(&text, "fuzz.csv") {
        for c in dir.contacts() {
            let by_phone = dir.lookup_number(c.phone.as_str()).map(|f| &f.account);
            assert_eq!(by_phone, Some(&c.account), "{c:?}");
            let by_account = dir.lookup_account(&c.account).map(|f| &f.phone);
            assert_eq!(by_account, Some(&c.phone), "{c:?}");
        }
    }
});
