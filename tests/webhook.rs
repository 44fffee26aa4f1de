//! CRM webhook delivery from the durable outbox, end to end with the real
//! binary: call records POSTed to `crm.webhook.url` (a receiver in this
//! test, tests/common/receiver.rs) with `Idempotency-Key: <record id>` and
//! a valid `X-Switchboard-Signature`; refused deliveries retried with
//! backoff; records left undelivered by a `kill -9` delivered by the next
//! run on the same data directory.
//!
//! Calls are SIPp calls to the unknown number 999 (refused `404`, each
//! still stored as a call record with its outbox row). Record ids and the
//! outbox are read from the appliance's database with the library's
//! `Store` (a second SQLite connection; WAL).

// Test code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::phones::{ABORT_UNEXPECTED, appliance};
use common::receiver::{Delivery, Receiver};
use common::{Appliance, Driver, HANG, Options, Sipp, reserve_ports};
use switchboard::store::{CallFilter, OutboxItem, Store};

/// Calls per phase.
const CALLS: u32 = 10;

/// `n` SIPp calls to 999, all refused 404 as expected.
fn unknown_calls(a: &Appliance, n: u32) {
    let run = Sipp::new("call_uac_reject.xml", a.udp_addr(), "u1")
        .calls(n)
        .timeout_s(60)
        .args(&["-s", "999", "-r", "20", "-l", &n.to_string()])
        .args(ABORT_UNEXPECTED)
        .run();
    run.assert_all_succeeded(u64::from(n), "calls to 999");
}

fn options(port: u16) -> Options {
    Options::new(Driver::Auto).set(&format!("crm.webhook.url=\"http://127.0.0.1:{port}/hook\""))
}

/// Every stored record id.
fn record_ids(store: &Store) -> BTreeSet<String> {
    let all = CallFilter {
        limit: 100_000,
        ..CallFilter::default()
    };
    store
        .list_calls(&all)
        .expect("list calls")
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Every outbox row, due or not.
fn outbox(store: &Store) -> Vec<OutboxItem> {
    store.due(i64::MAX, 100_000).expect("read the outbox")
}

/// The Idempotency-Keys the receiver got, with how many POSTs each.
fn keys(got: &[Delivery]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in got {
        *m.entry(d.key().unwrap_or("<none>").to_owned()).or_insert(0) += 1;
    }
    m
}

/// Polls `ok` until it holds; fails with `ctx()` after [`HANG`].
fn wait_until(what: &str, mut ok: impl FnMut() -> bool, ctx: impl Fn() -> String) {
    let deadline = Instant::now() + HANG;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {HANG:?}\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn data_dir(a: &Appliance) -> std::path::PathBuf {
    a.data_dir.path().join("var")
}

fn state(store: &Store, rx: &Receiver, a: &Appliance) -> String {
    format!(
        "records: {:?}\noutbox: {:?}\nreceived keys: {:?}\n{}",
        record_ids(store),
        outbox(store)
            .iter()
            .map(|o| (&o.record_id, o.attempts, &o.last_error))
            .collect::<Vec<_>>(),
        keys(&rx.got()),
        a.stderr_tail()
    )
}

#[test]
fn webhook_delivers_every_record_once_across_refusals_and_kill_9() {
    let t0 = Instant::now();
    let rx_port = reserve_ports(1);
    let mut rx = Receiver::new(rx_port.port(0));

    // 1. The receiver is down: every delivery is refused and retried.
    let mut a = appliance(options(rx.port));
    let dir = data_dir(&a);
    let store = Store::open(&dir).expect("open the appliance's store");
    unknown_calls(&a, CALLS);
    wait_until(
        "records stored, each refused at least once, one retried",
        || {
            let rows = outbox(&store);
            record_ids(&store).len() == CALLS as usize
                && rows.len() == CALLS as usize
                && rows.iter().all(|o| o.attempts >= 1)
                && rows.iter().any(|o| o.attempts >= 2)
        },
        || state(&store, &rx, &a),
    );
    for o in outbox(&store) {
        let e = o.last_error.unwrap_or_default().to_lowercase();
        assert!(e.contains("refused"), "{}: {e}", o.record_id);
    }
    assert!(rx.got().is_empty());

    // 2. The receiver comes up: the retries deliver everything.
    rx.listen();
    let first: BTreeSet<String> = record_ids(&store);
    wait_until(
        "first records delivered",
        || {
            let got: BTreeSet<String> = keys(&rx.got()).into_keys().collect();
            outbox(&store).is_empty() && got == first
        },
        || state(&store, &rx, &a),
    );

    // 3. Down again; more calls; kill -9 with those undelivered.
    rx.close();
    unknown_calls(&a, CALLS);
    wait_until(
        "second records stored and refused",
        || {
            let rows = outbox(&store);
            record_ids(&store).len() == 2 * CALLS as usize
                && rows.len() == CALLS as usize
                && rows.iter().all(|o| o.attempts >= 1)
        },
        || state(&store, &rx, &a),
    );
    a.assert_alive();
    assert!(
        a.stderr().contains("CRM webhook not delivered, will retry"),
        "{}",
        a.stderr_tail()
    );
    a.kill();
    let undelivered: BTreeSet<String> = outbox(&store).into_iter().map(|o| o.record_id).collect();
    assert!(undelivered.is_disjoint(&first));

    // 4. The receiver up, the appliance restarted on the same data: the
    // outbox left by the killed run is delivered.
    rx.listen();
    let b =
        appliance(options(rx.port).set(&format!("node.data_dir={:?}", dir.display().to_string())));
    let all = record_ids(&store);
    assert_eq!(all.len(), 2 * CALLS as usize);
    wait_until(
        "every record delivered after the restart",
        || {
            let got: BTreeSet<String> = keys(&rx.got()).into_keys().collect();
            outbox(&store).is_empty() && got == all
        },
        || state(&store, &rx, &b),
    );

    // Every POST: the right path and headers, a valid signature, and the
    // stored record as its body.
    let got = rx.got();
    for d in &got {
        let key = d.key().expect("Idempotency-Key");
        assert!(d.signature_ok, "{key}: signature does not verify: {d:?}");
        assert_eq!(d.path, "/hook", "{key}");
        assert_eq!(d.header("Content-Type"), Some("application/json"), "{key}");
        let body: serde_json::Value = serde_json::from_slice(&d.body).expect("JSON body");
        let stored = store.get_call(key).expect("read call").expect("stored");
        assert_eq!(body, stored.record, "{key}");
    }
    // Each record POSTed exactly once: no delivery was in doubt (the kill
    // came while the receiver was down, so nothing was answered and not
    // yet marked).
    let per_key = keys(&got);
    let repeats: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeats.is_empty(),
        "repeated deliveries {repeats:?}\n{}",
        state(&store, &rx, &b)
    );
    assert!(store.dead_letters(100).expect("dead letters").is_empty());

    let s = b.stop();
    assert!(
        s.stderr.contains("CRM webhook delivery stopped"),
        "{}",
        s.tail()
    );
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}
