//! The untyped config tree: a TOML document turned into plain nodes that
//! remember where each value came from (a line of the file, or a `--set`
//! override), and the `--set KEY=VALUE` overrides applied on top.
//!
//! `toml_edit` parses the file and keeps byte spans; this module turns spans
//! into line numbers once, so the typed walk in `validate` never needs the
//! source text again.

use std::ops::Range;

use toml_edit::{Document, Item, Key, Value};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From the config file, at this 1-based line when known.
    File(Option<usize>),
    /// From a `--set` override on the command line.
    Set,
}

/// A value of the tree with its origin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub origin: Origin,
    pub kind: Kind,
}

/// The TOML value kinds, tables and arrays of tables folded into one each.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// One `key = value` of a table, in file order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    /// Where the key itself is written (for "unknown key").
    pub key_origin: Origin,
    pub node: Node,
}

impl Kind {
    /// "a string", "an integer", ... for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Kind::Str(s) => format!("a string ({s:?})"),
            Kind::Int(i) => format!("an integer ({i})"),
            Kind::Float(f) => format!("a float ({f})"),
            Kind::Bool(b) => format!("a boolean ({b})"),
            Kind::Datetime(d) => format!("a date-time ({d})"),
            Kind::Array(_) => "an array".to_owned(),
            Kind::Table(_) => "a table".to_owned(),
        }
    }
}

impl Node {
    /// The entries when this node is a table.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Table(entries) => Some(entries),
            _ => None,
        }
    }

    /// The entry `key` of this table node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.node)
    }

    /// Follows a path of table keys from this node.
    pub fn lookup(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    fn with_origin(kind: Kind, origin: Origin) -> Node {
        Node { origin, kind }
    }
}

/// Maps byte offsets of the file to 1-based line numbers.
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    fn origin(&self, span: Option<Range<usize>>, fallback: Origin) -> Origin {
        match span {
            Some(span) => Origin::File(Some(self.line(span.start))),
            None => fallback,
        }
    }
}

/// Parses `text` as a TOML document into a tree. On a syntax error returns
/// the 1-based line (when toml_edit gave a span) and a one-line message.
pub(crate) fn parse_document(text: &str) -> Result<Node, (Option<usize>, String)> {
    let lines = Lines::new(text);
    let doc = Document::parse(text).map_err(|e| {
        let line = e.span().map(|s| lines.line(s.start));
        (line, one_line(e.message()))
    })?;
    Ok(convert_item(doc.as_item(), &lines, Origin::File(Some(1)))
        .unwrap_or_else(|| Node::with_origin(Kind::Table(Vec::new()), Origin::File(None))))
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn convert_item(item: &Item, lines: &Lines, fallback: Origin) -> Option<Node> {
    let origin = lines.origin(item.span(), fallback);
    Some(match item {
        Item::None => return None,
        Item::Value(v) => convert_value(v, lines, fallback),
        Item::Table(t) => {
            let entries = t
                .iter()
                .filter_map(|(k, item)| convert_entry(k, t.key(k), item, lines, origin))
                .collect();
            Node::with_origin(Kind::Table(entries), origin)
        }
        Item::ArrayOfTables(a) => {
            let tables = a
                .iter()
                .map(|t| convert_item(&Item::Table(t.clone()), lines, origin))
                .collect::<Option<Vec<_>>>()?;
            Node::with_origin(Kind::Array(tables), origin)
        }
    })
}

fn convert_entry(
    key: &str,
    key_repr: Option<&Key>,
    item: &Item,
    lines: &Lines,
    parent: Origin,
) -> Option<Entry> {
    let key_origin = lines.origin(key_repr.and_then(Key::span), parent);
    let node = convert_item(item, lines, key_origin)?;
    Some(Entry {
        key: key.to_owned(),
        key_origin,
        node,
    })
}

fn convert_value(value: &Value, lines: &Lines, fallback: Origin) -> Node {
    let origin = lines.origin(value.span(), fallback);
    let kind = match value {
        Value::String(s) => Kind::Str(s.value().clone()),
        Value::Integer(i) => Kind::Int(*i.value()),
        Value::Float(f) => Kind::Float(*f.value()),
        Value::Boolean(b) => Kind::Bool(*b.value()),
        Value::Datetime(d) => Kind::Datetime(d.value().to_string()),
        Value::Array(a) => Kind::Array(a.iter().map(|v| convert_value(v, lines, origin)).collect()),
        Value::InlineTable(t) => Kind::Table(
            t.iter()
                .filter_map(|(k, v)| {
                    let item = Item::Value(v.clone());
                    convert_entry(k, t.key(k), &item, lines, origin)
                })
                .collect(),
        ),
    };
    Node::with_origin(kind, origin)
}

/// Why a `--set` override could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OverrideError {
    #[error("expected KEY=VALUE, e.g. --set sip.t1_ms=250")]
    NoEquals,
    #[error("{0:?} is not a dotted key path (expected e.g. sip.t1_ms or users[0].password)")]
    BadKey(String),
    #[error(
        "{value:?} is not a TOML value ({reason}); write VALUE as TOML: quote strings (--set 'sip.domain=\"pbx.example.com\"'), arrays as [\"a\", \"b\"]"
    )]
    BadValue { value: String, reason: String },
    #[error("cannot set a key inside {parent}, which is {found}, not a table")]
    NotATable { parent: String, found: String },
    #[error("{parent} has no element [{index}] (it has {len})")]
    NoSuchIndex {
        parent: String,
        index: usize,
        len: usize,
    },
    #[error("{0} is not an array; [index] needs one")]
    NotAnArray(String),
}

/// One step of an override key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A parsed `--set` override: the key as written, its path, its value.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    pub key: String,
    steps: Vec<Step>,
    value: Node,
}

/// Parses `KEY=VALUE`. KEY is a dotted path of bare TOML keys, each
/// optionally followed by `[N]` indices; VALUE is a TOML value. A VALUE that
/// is not TOML but is a plain word (no quotes, brackets, braces, `=`, `#`,
/// `,` or whitespace) is taken as a string, because a shell strips the quotes
/// of `--set node.data_dir="/tmp/sb1"` before the appliance sees them.
pub(crate) fn parse_override(arg: &str) -> Result<Override, (String, OverrideError)> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err((arg.trim().to_owned(), OverrideError::NoEquals));
    };
    let key = key.trim();
    let steps = parse_key_path(key)
        .ok_or_else(|| (key.to_owned(), OverrideError::BadKey(key.to_owned())))?;
    let value_text = value.trim();
    let node = match value_text.parse::<Value>() {
        Ok(v) => {
            let mut node = convert_value(&v, &Lines::new(""), Origin::Set);
            set_origin(&mut node);
            node
        }
        Err(_) if is_plain_word(value_text) => {
            Node::with_origin(Kind::Str(value_text.to_owned()), Origin::Set)
        }
        Err(e) => {
            return Err((
                key.to_owned(),
                OverrideError::BadValue {
                    value: value_text.to_owned(),
                    reason: one_line(e.message()),
                },
            ));
        }
    };
    Ok(Override {
        key: key.to_owned(),
        steps,
        value: node,
    })
}

fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'[]{}=#,".contains(c))
}

fn set_origin(node: &mut Node) {
    node.origin = Origin::Set;
    match &mut node.kind {
        Kind::Array(items) => items.iter_mut().for_each(set_origin),
        Kind::Table(entries) => {
            for e in entries.iter_mut() {
                e.key_origin = Origin::Set;
                set_origin(&mut e.node);
            }
        }
        _ => {}
    }
}

fn parse_key_path(key: &str) -> Option<Vec<Step>> {
    let bare = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let mut steps = Vec::new();
    for segment in key.split('.') {
        let (name, mut rest) = match segment.find('[') {
            Some(i) => segment.split_at(i),
            None => (segment, ""),
        };
        if !bare(name) {
            return None;
        }
        steps.push(Step::Key(name.to_owned()));
        while !rest.is_empty() {
            let inner = rest.strip_prefix('[')?;
            let close = inner.find(']')?;
            let index = inner[..close].parse().ok()?;
            steps.push(Step::Index(index));
            rest = &inner[close + 1..];
        }
    }
    Some(steps)
}

/// Applies one override to the tree, creating missing tables on the way.
pub(crate) fn apply_override(root: &mut Node, ov: &Override) -> Result<(), OverrideError> {
    let mut node = root;
    let mut walked = String::new();
    for (i, step) in ov.steps.iter().enumerate() {
        let last = i + 1 == ov.steps.len();
        node = match step {
            Step::Key(k) => {
                let parent = if walked.is_empty() {
                    "the top level".to_owned()
                } else {
                    walked.clone()
                };
                let found = node.kind.describe();
                let Kind::Table(entries) = &mut node.kind else {
                    return Err(OverrideError::NotATable { parent, found });
                };
                let pos = match entries.iter().position(|e| e.key == *k) {
                    Some(pos) => pos,
                    None => {
                        entries.push(Entry {
                            key: k.clone(),
                            key_origin: Origin::Set,
                            node: Node::with_origin(Kind::Table(Vec::new()), Origin::Set),
                        });
                        entries.len() - 1
                    }
                };
                let entry = &mut entries[pos];
                if last {
                    entry.key_origin = Origin::Set;
                }
                if !walked.is_empty() {
                    walked.push('.');
                }
                walked.push_str(k);
                &mut entry.node
            }
            Step::Index(index) => {
                let Kind::Array(items) = &mut node.kind else {
                    return Err(OverrideError::NotAnArray(walked));
                };
                let len = items.len();
                let parent = walked.clone();
                walked.push_str(&format!("[{index}]"));
                items.get_mut(*index).ok_or(OverrideError::NoSuchIndex {
                    parent,
                    index: *index,
                    len,
                })?
            }
        };
    }
    *node = ov.value.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_maps_offsets_to_one_based_lines() {
        let l = Lines::new("a\nbc\n\nd");
        assert_eq!(l.line(0), 1);
        assert_eq!(l.line(1), 1);
        assert_eq!(l.line(2), 2);
        assert_eq!(l.line(5), 3);
        assert_eq!(l.line(6), 4);
    }

    #[test]
    fn tree_keeps_value_and_key_lines() {
        let root =
            parse_document("[sip]\nt1_ms = 250\nlisten = [\n  \"a\",\n  \"b\",\n]\n").unwrap();
        let t1 = root.lookup(&["sip", "t1_ms"]).unwrap();
        assert_eq!(t1.origin, Origin::File(Some(2)));
        let Kind::Array(items) = &root.lookup(&["sip", "listen"]).unwrap().kind else {
            panic!("listen is an array");
        };
        assert_eq!(items[1].origin, Origin::File(Some(5)));
        assert_eq!(root.get("sip").unwrap().origin, Origin::File(Some(1)));
    }

    #[test]
    fn dotted_keys_and_arrays_of_tables_become_tables_and_arrays() {
        let root = parse_document(
            "crm.webhook.url = \"x\"\n[[users]]\nid = \"1\"\n[[users]]\nid = \"2\"\n",
        )
        .unwrap();
        let url = root.lookup(&["crm", "webhook", "url"]).unwrap();
        assert_eq!(url.origin, Origin::File(Some(1)));
        let Kind::Array(users) = &root.get("users").unwrap().kind else {
            panic!("users is an array");
        };
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].get("id").unwrap().origin, Origin::File(Some(5)));
    }

    #[test]
    fn syntax_error_reports_line() {
        let (line, message) = parse_document("[sip]\nt1_ms = \n").unwrap_err();
        assert_eq!(line, Some(2));
        assert!(!message.contains('\n'));
    }

    #[test]
    fn override_replaces_and_creates_with_set_origin() {
        let mut root = parse_document("[sip]\nt1_ms = 250\n").unwrap();
        apply_override(&mut root, &parse_override("sip.t1_ms=300").unwrap()).unwrap();
        apply_override(
            &mut root,
            &parse_override("crm.webhook.url=\"http://x\"").unwrap(),
        )
        .unwrap();
        let t1 = root.lookup(&["sip", "t1_ms"]).unwrap();
        assert_eq!((t1.origin, &t1.kind), (Origin::Set, &Kind::Int(300)));
        let url = root.lookup(&["crm", "webhook", "url"]).unwrap();
        assert_eq!(url.kind, Kind::Str("http://x".into()));
    }

    #[test]
    fn override_indexes_into_arrays() {
        let mut root = parse_document("[[users]]\nid = \"1\"\npassword = \"a\"\n").unwrap();
        apply_override(
            &mut root,
            &parse_override("users[0].password=\"b\"").unwrap(),
        )
        .unwrap();
        let Kind::Array(users) = &root.get("users").unwrap().kind else {
            panic!("users is an array");
        };
        assert_eq!(
            users[0].get("password").unwrap().kind,
            Kind::Str("b".into())
        );
        let err =
            apply_override(&mut root, &parse_override("users[3].id=\"x\"").unwrap()).unwrap_err();
        assert!(matches!(
            err,
            OverrideError::NoSuchIndex {
                index: 3,
                len: 1,
                ..
            }
        ));
    }

    #[test]
    fn override_plain_word_is_a_string_but_broken_toml_is_refused() {
        let ov = parse_override("node.data_dir=/tmp/x").unwrap();
        assert_eq!(ov.value.kind, Kind::Str("/tmp/x".into()));
        let (key, err) = parse_override("sip.listen=[\"udp:1.2.3.4:5060\"").unwrap_err();
        assert_eq!(key, "sip.listen");
        assert!(err.to_string().contains("quote strings"), "{err}");
        let (_, err) = parse_override("sip.domain=two words").unwrap_err();
        assert!(matches!(err, OverrideError::BadValue { .. }));
        assert!(matches!(
            parse_override("sip.t1_ms").unwrap_err().1,
            OverrideError::NoEquals
        ));
        assert!(matches!(
            parse_override("sip..x=1").unwrap_err().1,
            OverrideError::BadKey(_)
        ));
    }
}
