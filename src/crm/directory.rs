//! The built-in CRM directory: `firmware-config/contacts.csv`.
//!
//! Used for screen pops when `crm.lookup.url` is empty (CONTRACT, "The demo
//! appliance"). The file is read once at start; a bad file is refused with
//! its name, the line and what was expected ([`DirectoryError`]).
//!
//! # File format
//!
//! ```text
//! phone,account,name,tier,last_agent,notes
//! +815012345678, A-1001, Hanako Yamada, vip, 1003, Prefers Japanese
//! ```
//!
//! * The first non-blank line that is not a `#` comment is the header and must
//!   name exactly these columns in this order.
//! * Fields are separated by `,` and trimmed; a field may be double-quoted
//!   (RFC 4180: `""` inside quotes is one `"`), so notes can hold commas.
//! * `last_agent` and `notes` may be left out or empty; the first four fields
//!   are required.
//! * `phone` is E.164 with its leading `+` (visual separators are allowed and
//!   removed, see [`E164::normalize`]); `tier` is `prospect`, `regular` or
//!   `vip`. Phones and accounts are unique.
//!
//! # Matching a caller
//!
//! The caller's number (user part of From or P-Asserted-Identity) goes
//! through [`E164::normalize`] and is looked up exactly. Accounts match
//! case-insensitively, or by their digits alone, since that is what a caller
//! keys in on the IVR (`9`, then `1001#` for `A-1001`); two accounts with the
//! same digits are therefore refused at load.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

/// A phone number in E.164 form: `+`, then 4 to 15 digits, the first not `0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct E164(String);

impl E164 {
    /// Normalizes a caller's number to E.164, or `None` if it cannot be.
    ///
    /// * A `;parameter` tail (tel-URI style, `;npdi`, `;phone-context=…`) is
    ///   dropped.
    /// * Spaces, `-`, `.`, `(` and `)` are removed.
    /// * A leading `+` is kept; a leading `00` (international prefix) becomes
    ///   `+`.
    /// * Digits without `+` or `00` are taken as already including the
    ///   country code (`815012345678` → `+815012345678`). A national number
    ///   (`05012345678`, leading `0`) cannot be normalized without a
    ///   configured country code, which the appliance does not have, so it
    ///   is `None`.
    /// * Anything else (letters, `*`, `#`, too short or longer than 15
    ///   digits) is `None`.
    pub fn normalize(raw: &str) -> Option<E164> {
        let raw = raw.split(';').next().unwrap_or("").trim();
        let mut cleaned = String::with_capacity(raw.len() + 1);
        for (i, c) in raw.chars().enumerate() {
            match c {
                ' ' | '\t' | '-' | '.' | '(' | ')' => {}
                '+' if i == 0 => cleaned.push('+'),
                '0'..='9' => cleaned.push(c),
                _ => return None,
            }
        }
        let digits = if let Some(d) = cleaned.strip_prefix('+') {
            d
        } else if let Some(d) = cleaned.strip_prefix("00") {
            d
        } else {
            cleaned.as_str()
        };
        let ok = (4..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| E164(format!("+{digits}")))
    }

    /// The number with its leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A customer's tier; it raises the call's priority in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Prospect,
    Regular,
    Vip,
}

impl Tier {
    /// Queue priority bonus, higher is served first: prospect 0, regular 5,
    /// vip 10. The gaps leave room for the queue's own priorities (an IVR
    /// choice, a callback) to sit between tiers.
    pub fn priority(self) -> u8 {
        match self {
            Tier::Prospect => 0,
            Tier::Regular => 5,
            Tier::Vip => 10,
        }
    }

    /// The name used in the file and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Prospect => "prospect",
            Tier::Regular => "regular",
            Tier::Vip => "vip",
        }
    }
}

impl FromStr for Tier {
    type Err = ();

    /// Exactly `prospect`, `regular` or `vip`, ASCII case-insensitive.
    fn from_str(s: &str) -> Result<Tier, ()> {
        match s.to_ascii_lowercase().as_str() {
            "prospect" => Ok(Tier::Prospect),
            "regular" => Ok(Tier::Regular),
            "vip" => Ok(Tier::Vip),
            _ => Err(()),
        }
    }
}

/// One row of the directory: what a screen pop shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contact {
    pub phone: E164,
    pub account: String,
    pub name: String,
    pub tier: Tier,
    /// The agent who last served this customer (an agent id such as `1003`).
    pub last_agent: Option<String>,
    pub notes: String,
}

/// Why a directory file was refused. `origin` is the file name (or whatever
/// [`Directory::parse`] was given); `line` is 1-based.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: no header line; expected `{}`", COLUMNS.join(","))]
    Empty { origin: String },
    #[error("{origin}:{line}: header is `{found}`; expected `{}`", COLUMNS.join(","))]
    Header {
        origin: String,
        line: usize,
        found: String,
    },
    #[error("{origin}:{line}: {found} fields; expected 4 to 6 ({})", COLUMNS.join(","))]
    FieldCount {
        origin: String,
        line: usize,
        found: usize,
    },
    #[error("{origin}:{line}: unterminated quoted field")]
    Quote { origin: String, line: usize },
    #[error("{origin}:{line}: `{column}` is empty")]
    Missing {
        origin: String,
        line: usize,
        column: &'static str,
    },
    #[error(
        "{origin}:{line}: phone `{found}` is not E.164 (expected `+` and 4 to 15 digits, e.g. +815012345678)"
    )]
    BadPhone {
        origin: String,
        line: usize,
        found: String,
    },
    #[error("{origin}:{line}: tier `{found}`; expected prospect, regular or vip")]
    BadTier {
        origin: String,
        line: usize,
        found: String,
    },
    #[error("{origin}:{line}: phone {phone} already on line {first}")]
    DuplicatePhone {
        origin: String,
        line: usize,
        phone: E164,
        first: usize,
    },
    #[error(
        "{origin}:{line}: account `{account}` already on line {first} (accounts match case-insensitively and by their digits alone)"
    )]
    DuplicateAccount {
        origin: String,
        line: usize,
        account: String,
        first: usize,
    },
}

/// The columns, in file order.
pub const COLUMNS: [&str; 6] = ["phone", "account", "name", "tier", "last_agent", "notes"];

/// The loaded directory, indexed by phone and by account.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    contacts: Vec<Contact>,
    by_phone: HashMap<E164, usize>,
    /// Lowercased account → index.
    by_account: HashMap<String, usize>,
    /// The account's digits alone (when it has any) → index.
    by_account_digits: HashMap<String, usize>,
}

impl Directory {
    /// Reads and parses a directory file.
    pub fn load(path: impl AsRef<Path>) -> Result<Directory, DirectoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Directory::parse(&text, &path.display().to_string())
    }

    /// Parses directory text; `origin` names it in errors (usually the path).
    pub fn parse(text: &str, origin: &str) -> Result<Directory, DirectoryError> {
        let o = || origin.to_string();
        let mut dir = Directory::default();
        let mut header_seen = false;
        // Line (1-based) of each contact, for duplicate messages.
        let mut lines: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields =
                split_fields(trimmed).ok_or_else(|| DirectoryError::Quote { origin: o(), line })?;
            if !header_seen {
                let names: Vec<String> = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
                if names != COLUMNS {
                    return Err(DirectoryError::Header {
                        origin: o(),
                        line,
                        found: trimmed.to_string(),
                    });
                }
                header_seen = true;
                continue;
            }
            if !(4..=6).contains(&fields.len()) {
                return Err(DirectoryError::FieldCount {
                    origin: o(),
                    line,
                    found: fields.len(),
                });
            }
            for (column, value) in COLUMNS.iter().zip(&fields).take(4) {
                if value.is_empty() {
                    return Err(DirectoryError::Missing {
                        origin: o(),
                        line,
                        column,
                    });
                }
            }
            let phone = if fields[0].starts_with('+') {
                E164::normalize(&fields[0])
            } else {
                None
            }
            .ok_or_else(|| DirectoryError::BadPhone {
                origin: o(),
                line,
                found: fields[0].clone(),
            })?;
            let tier: Tier = fields[3].parse().map_err(|()| DirectoryError::BadTier {
                origin: o(),
                line,
                found: fields[3].clone(),
            })?;
            let field = |n: usize| fields.get(n).cloned().unwrap_or_default();
            let last_agent = Some(field(4)).filter(|a| !a.is_empty());
            let contact = Contact {
                phone,
                account: fields[1].clone(),
                name: fields[2].clone(),
                tier,
                last_agent,
                notes: field(5),
            };
            let index = dir.contacts.len();
            if let Some(&first) = dir.by_phone.get(&contact.phone) {
                return Err(DirectoryError::DuplicatePhone {
                    origin: o(),
                    line,
                    phone: contact.phone,
                    first: lines[first],
                });
            }
            // Keyed as lookups ask: trimmed (a quoted field keeps its
            // whitespace), ASCII case folded.
            let key = contact.account.trim().to_ascii_lowercase();
            let digits = account_digits(&contact.account);
            let clash = dir.by_account.get(&key).copied().or_else(|| {
                digits
                    .as_ref()
                    .and_then(|d| dir.by_account_digits.get(d).copied())
            });
            if let Some(first) = clash {
                return Err(DirectoryError::DuplicateAccount {
                    origin: o(),
                    line,
                    account: contact.account,
                    first: lines[first],
                });
            }
            dir.by_phone.insert(contact.phone.clone(), index);
            dir.by_account.insert(key, index);
            if let Some(d) = digits {
                dir.by_account_digits.insert(d, index);
            }
            dir.contacts.push(contact);
            lines.push(line);
        }
        if !header_seen {
            return Err(DirectoryError::Empty { origin: o() });
        }
        Ok(dir)
    }

    /// The contact for a caller's number (any form [`E164::normalize`]
    /// accepts), if the number normalizes and is listed.
    pub fn lookup_number(&self, number: &str) -> Option<&Contact> {
        let phone = E164::normalize(number)?;
        self.by_phone.get(&phone).map(|&i| &self.contacts[i])
    }

    /// The contact for an account, matched case-insensitively (`a-1001`) or
    /// by its digits alone as keyed in on the IVR (`1001`).
    pub fn lookup_account(&self, account: &str) -> Option<&Contact> {
        let account = account.trim();
        self.by_account
            .get(&account.to_ascii_lowercase())
            .or_else(|| {
                let all_digits = !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit());
                all_digits
                    .then(|| self.by_account_digits.get(account))
                    .flatten()
            })
            .map(|&i| &self.contacts[i])
    }

    /// Every contact, in file order.
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }

    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }
}

/// The ASCII digits of an account, if it has any (`A-1001` → `1001`).
fn account_digits(account: &str) -> Option<String> {
    let d: String = account.chars().filter(|c| c.is_ascii_digit()).collect();
    (!d.is_empty()).then_some(d)
}

/// Splits one CSV line into trimmed fields; `None` on an unterminated quote.
/// A quoted field keeps its inner spaces; `""` inside quotes is one `"`.
fn split_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    // Inside a quoted section now.
    let mut quoted = false;
    // Length of the field's quoted part, once its closing quote is seen.
    let mut quoted_len: Option<usize> = None;
    let mut finish = |field: &mut String, quoted_len: &mut Option<usize>| {
        let value = match quoted_len.take() {
            Some(n) => format!("{}{}", &field[..n], field[n..].trim()),
            None => field.trim().to_string(),
        };
        fields.push(value);
        field.clear();
    };
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    quoted = false;
                    quoted_len = Some(field.len());
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            ',' => finish(&mut field, &mut quoted_len),
            '"' if quoted_len.is_none() && field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    finish(&mut field, &mut quoted_len);
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "phone,account,name,tier,last_agent,notes\n";

    fn parse(rows: &str) -> Result<Directory, DirectoryError> {
        Directory::parse(&format!("{HEADER}{rows}"), "contacts.csv")
    }

    fn demo() -> Directory {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/contacts.csv");
        Directory::load(path).expect("the shipped directory loads")
    }

    #[test]
    fn shipped_directory_holds_the_contract_row() {
        let dir = demo();
        assert!(dir.len() >= 10);
        let c = dir.lookup_number("+815012345678").expect("Hanako Yamada");
        assert_eq!(c.account, "A-1001");
        assert_eq!(c.name, "Hanako Yamada");
        assert_eq!(c.tier, Tier::Vip);
        assert_eq!(dir.lookup_account("A-1001"), Some(c));
    }

    #[test]
    fn shipped_directory_last_agents_are_demo_agents() {
        for c in demo().contacts() {
            if let Some(a) = &c.last_agent {
                let n: u32 = a.parse().expect("numeric agent id");
                assert!((1001..=1010).contains(&n), "{}: {a}", c.name);
            }
        }
    }

    #[test]
    fn normalize_strips_separators_and_keeps_plus() {
        let want = Some(E164("+815012345678".into()));
        assert_eq!(E164::normalize("+815012345678"), want);
        assert_eq!(E164::normalize("+81 50-1234.5678"), want);
        assert_eq!(E164::normalize("+81 (50) 1234 5678"), want);
        assert_eq!(E164::normalize("+815012345678;npdi"), want);
    }

    #[test]
    fn normalize_maps_00_prefix_and_bare_digits_to_plus() {
        let want = Some(E164("+815012345678".into()));
        assert_eq!(E164::normalize("00815012345678"), want);
        assert_eq!(E164::normalize("815012345678"), want);
        assert_eq!(
            E164::normalize("1-555-555-0100").unwrap().as_str(),
            "+15555550100"
        );
    }

    #[test]
    fn normalize_refuses_national_and_malformed_numbers() {
        for bad in [
            "05012345678",
            "050 1234 5678",
            "+0815012345678",
            "anonymous",
            "1001*",
            "+81 50 1234 5678 9999",
            "+123",
            "",
            "+",
            "81+5012345678",
        ] {
            assert_eq!(E164::normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lookup_number_normalizes_the_caller() {
        let dir = demo();
        assert_eq!(
            dir.lookup_number("0081 50 1234 5678").unwrap().account,
            "A-1001"
        );
        assert_eq!(dir.lookup_number("815012345678").unwrap().account, "A-1001");
        assert!(dir.lookup_number("05012345678").is_none());
        assert!(dir.lookup_number("+19999999999").is_none());
    }

    #[test]
    fn lookup_account_is_case_insensitive_and_takes_keyed_digits() {
        let dir = demo();
        assert_eq!(dir.lookup_account("a-1001").unwrap().name, "Hanako Yamada");
        assert_eq!(dir.lookup_account("1001").unwrap().name, "Hanako Yamada");
        assert!(dir.lookup_account("9999").is_none());
        assert!(dir.lookup_account("").is_none());
    }

    #[test]
    fn optional_columns_may_be_left_out() {
        let dir = parse("+815012345678, A-1001, Hanako Yamada, vip\n").unwrap();
        let c = &dir.contacts()[0];
        assert_eq!(c.last_agent, None);
        assert_eq!(c.notes, "");
    }

    #[test]
    fn quoted_notes_keep_commas_and_quotes() {
        let dir =
            parse("+15555550100,A-1,Alice,vip,1002,  \"Acme, Inc. says \"\"hi\"\"\" \n").unwrap();
        assert_eq!(dir.contacts()[0].notes, "Acme, Inc. says \"hi\"");
        assert_eq!(dir.contacts()[0].last_agent.as_deref(), Some("1002"));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = "# demo\n\nphone,account,name,tier,last_agent,notes\n\n# x\n+15555550100,A-1,Alice,regular,,\n";
        assert_eq!(Directory::parse(text, "c.csv").unwrap().len(), 1);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("+15555550100,A-1,Alice,regular\n+15555550101,A-2,Bob,gold\n").unwrap_err();
        assert!(matches!(e, DirectoryError::BadTier { line: 3, .. }), "{e}");
        assert!(
            e.to_string().starts_with("contacts.csv:3: tier `gold`"),
            "{e}"
        );
    }

    #[test]
    fn bad_phone_is_refused() {
        for bad in ["05012345678", "815012345678", "+81-50-abc", "+0123456"] {
            let e = parse(&format!("{bad},A-1,Alice,vip\n")).unwrap_err();
            assert!(
                matches!(e, DirectoryError::BadPhone { line: 2, .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn duplicate_phone_names_both_lines() {
        let e = parse("+15555550100,A-1,Alice,vip\n+1 555 555 0100,A-2,Bob,vip\n").unwrap_err();
        assert!(
            matches!(
                e,
                DirectoryError::DuplicatePhone {
                    line: 3,
                    first: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn duplicate_account_is_refused_case_insensitively_and_by_digits() {
        let e = parse("+15555550100,A-1,Alice,vip\n+15555550101,a-1,Bob,vip\n").unwrap_err();
        assert!(
            matches!(
                e,
                DirectoryError::DuplicateAccount {
                    line: 3,
                    first: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("+15555550100,A-1,Alice,vip\n+15555550101,B-1,Bob,vip\n").unwrap_err();
        assert!(
            matches!(e, DirectoryError::DuplicateAccount { line: 3, .. }),
            "{e}"
        );
    }

    #[test]
    fn header_missing_or_wrong_is_refused() {
        assert!(matches!(
            Directory::parse("", "c.csv"),
            Err(DirectoryError::Empty { .. })
        ));
        assert!(matches!(
            Directory::parse("+15555550100,A-1,Alice,vip\n", "c.csv"),
            Err(DirectoryError::Header { line: 1, .. })
        ));
    }

    #[test]
    fn field_count_and_required_fields_are_checked() {
        assert!(matches!(
            parse("+15555550100,A-1,Alice\n"),
            Err(DirectoryError::FieldCount { found: 3, .. })
        ));
        assert!(matches!(
            parse("+15555550100,A-1,Alice,vip,,,x\n"),
            Err(DirectoryError::FieldCount { found: 7, .. })
        ));
        assert!(matches!(
            parse("+15555550100,,Alice,vip\n"),
            Err(DirectoryError::Missing {
                column: "account",
                ..
            })
        ));
        assert!(matches!(
            parse("+15555550100,A-1,\"Alice,vip\n"),
            Err(DirectoryError::Quote { line: 2, .. })
        ));
    }

    #[test]
    fn a_quoted_account_with_whitespace_is_found_as_looked_up() {
        let dir = parse("+15555550100,\" A-7\r\",Alice,vip\n").unwrap();
        let c = &dir.contacts()[0];
        assert_eq!(c.account, " A-7\r");
        assert_eq!(
            dir.lookup_account(&c.account).map(|f| f.name.as_str()),
            Some("Alice")
        );
        assert_eq!(
            dir.lookup_account("a-7").map(|f| f.name.as_str()),
            Some("Alice")
        );
    }

    #[test]
    fn load_names_a_missing_file() {
        let e = Directory::load("/nonexistent/contacts.csv").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/contacts.csv: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn tier_priority_orders_vip_first_and_serializes_lowercase() {
        assert!(Tier::Vip.priority() > Tier::Regular.priority());
        assert!(Tier::Regular.priority() > Tier::Prospect.priority());
        assert_eq!(Tier::Prospect.priority(), 0);
        assert_eq!("VIP".parse::<Tier>(), Ok(Tier::Vip));
        assert_eq!(Tier::Regular.as_str(), "regular");
        #[derive(Serialize)]
        struct Row {
            tier: Tier,
            phone: E164,
        }
        let row = Row {
            tier: Tier::Vip,
            phone: E164::normalize("+815012345678").unwrap(),
        };
        let text = toml::to_string(&row).unwrap();
        assert_eq!(text, "tier = \"vip\"\nphone = \"+815012345678\"\n");
    }
}
