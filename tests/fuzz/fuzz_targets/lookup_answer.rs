//! Fuzz target `lookup_answer`: the CRM's answer to a screen-pop lookup
//! (`crm::lookup::contact_from_answer`), an untrusted HTTP body.
//!
//! Input: the body's bytes, as the CRM sent them. Each input is mapped twice:
//! with the default `[crm.lookup.fields]` and a lookup that had a number and
//! an account, and with dotted-path fields (`contact.name`, ...) and a lookup
//! that had only an account.
//!
//! Invariants checked (beyond "never panics"):
//! * the mapping is deterministic;
//! * a contact's phone is E.164 and normalizes to itself; without an asked
//!   number it came from the answer, so an answer without one is `NoPhone`;
//! * names, accounts and agents carry no surrounding whitespace, an agent is
//!   never empty, notes always are;
//! * an empty, `null` or `[]` body is a miss.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::config::LookupFields;
use switchboard::crm::directory::{Contact, E164};
use switchboard::crm::lookup::{AnswerError, LookupKey, contact_from_answer};

fn check(c: &Contact) {
    let p = c.phone.as_str();
    assert_eq!(
        E164::normalize(p).as_ref().map(E164::as_str),
        Some(p),
        "{c:?}"
    );
    for s in [&c.name, &c.account] {
        assert_eq!(s.trim(), s.as_str(), "{c:?}");
    }
    if let Some(a) = &c.last_agent {
        assert!(!a.is_empty() && a.trim() == a, "{c:?}");
    }
    assert!(c.notes.is_empty(), "{c:?}");
}

fuzz_target!(|data: &[u8]| {
    let plain = LookupFields::default();
    let dotted = LookupFields {
        name: "contact.name".into(),
        account: "contact.ids.account".into(),
        tier: "segment".into(),
        last_agent: "owner.agent".into(),
        phone: "contact.phone".into(),
    };
    let with_number = LookupKey {
        number: E164::normalize("+15555550100"),
        account: Some("A-1001".into()),
    };
    let account_only = LookupKey {
        number: None,
        account: Some(" 1001 ".into()),
    };
    for (fields, asked) in [(&plain, &with_number), (&dotted, &account_only)] {
        let got = contact_from_answer(data, fields, asked);
        assert_eq!(
            got,
            contact_from_answer(data, fields, asked),
            "deterministic"
        );
        match &got {
            Ok(Some(c)) => check(c),
            Ok(None) | Err(AnswerError::Json(_) | AnswerError::NotObject(_)) => {}
            Err(AnswerError::NoPhone) => assert!(asked.number.is_none(), "{got:?}"),
        }
        let trimmed = data.trim_ascii();
        if trimmed.is_empty() || trimmed == b"null" || trimmed == b"[]" {
            assert_eq!(got, Ok(None), "a miss");
        }
    }
});
