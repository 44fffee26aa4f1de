//! The contact center of the demo appliance (firmware-config/default.toml)
//! with real SIPp peers: agents 1001–1010 register their phones (and are
//! logged in and ready by that, `acd.auto_login`), customers call the
//! queues `support` (200, agents 1001–1010) and `sales` (201, agents
//! 1001–1005) and the IVR `main` (300) with SIPp's own RFC 2833 digit
//! captures.
//!
//! Which agent took which call is read from the appliance's call records
//! (one `call ended` log line per call: `to=`, `legs=USER:STATUS`, `path=`,
//! `data=`), the queue statistics from the ACD's report at exit, and the
//! stored records from the appliance's database (`var/switchboard.db`).

// Test code reads the real clock (.clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::phones::{ABORT_UNEXPECTED, Phone, appliance};
use common::{Appliance, Driver, Options, SIPP_DIR, Sipp, SippRun, Stopped};
use switchboard::store::{CallFilter, Store};

/// The agents' phones, registered and answering every offered call.
fn agents(a: &Appliance, users: impl IntoIterator<Item = u32>) -> Vec<Phone> {
    users
        .into_iter()
        .map(|u| {
            Phone::start(
                a,
                &u.to_string(),
                "acd_agent.xml",
                &["-m", "1000", "-timeout", "600s"],
            )
        })
        .collect()
}

/// `calls` customers calling `number` with `scenario`, `rate` per second.
fn customers(a: &Appliance, scenario: &str, number: &str, calls: u32, rate: u32) -> SippRun {
    Sipp::new(scenario, a.udp_addr(), "u1")
        .calls(calls)
        .timeout_s(120)
        .args(&[
            "-s",
            number,
            "-r",
            &rate.to_string(),
            "-l",
            &calls.to_string(),
        ])
        .args(ABORT_UNEXPECTED)
        .run()
}

/// One `call ended` record: its `key=value` fields.
fn records(s: &Stopped) -> Vec<BTreeMap<String, String>> {
    s.stderr
        .lines()
        .filter(|l| l.contains("call ended"))
        .map(|l| {
            let mut m = BTreeMap::new();
            for part in l.split_whitespace() {
                if let Some((k, v)) = part.split_once('=') {
                    m.insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
            }
            m
        })
        .collect()
}

/// The agent who answered the call of record `r` (a leg with 200).
fn answered_by(r: &BTreeMap<String, String>) -> Option<String> {
    r.get("legs")?
        .split(',')
        .find_map(|l| l.strip_suffix(":200").map(str::to_owned))
}

fn per_agent(recs: &[BTreeMap<String, String>], dialled: &str) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for r in recs
        .iter()
        .filter(|r| r.get("to").map(String::as_str) == Some(dialled))
    {
        if let Some(agent) = answered_by(r) {
            *n.entry(agent).or_insert(0) += 1;
        }
    }
    n
}

/// The number after `key=` in the ACD's statistics line of `queue` at
/// exit.
fn queue_stat(s: &Stopped, queue: &str, key: &str) -> u64 {
    let report = s
        .stderr
        .split("acd statistics at exit")
        .nth(1)
        .unwrap_or_else(|| panic!("no ACD statistics at exit\n{}", s.tail()));
    let line = report
        .lines()
        .find(|l| l.contains(&format!("queue {queue}")))
        .unwrap_or_else(|| panic!("no statistics of queue {queue}\n{report}"));
    let at = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    line[at + key.len() + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {line:?}"))
}

#[test]
fn queues_200_and_201_are_answered_by_their_agents_spread_fairly() {
    let a = appliance(Options::new(Driver::IoUring));
    let phones = agents(&a, 1001..=1010);
    let sales = customers(&a, "acd_caller.xml", "201", 10, 5);
    sales.assert_all_succeeded(10, &format!("callers to 201\n{}", a.stderr_tail()));
    let support = customers(&a, "acd_caller.xml", "200", 20, 5);
    support.assert_all_succeeded(20, &format!("callers to 200\n{}", a.stderr_tail()));
    drop(phones);
    let s = a.stop();
    let recs = records(&s);

    let sales = per_agent(&recs, "201");
    assert_eq!(sales.values().sum::<usize>(), 10, "{sales:?}\n{}", s.tail());
    assert!(
        sales
            .keys()
            .all(|a| ("1001"..="1005").contains(&a.as_str())),
        "only sales agents 1001–1005 take 201: {sales:?}"
    );
    assert!(sales.len() >= 4, "201 spread over its agents: {sales:?}");

    let support = per_agent(&recs, "200");
    assert_eq!(
        support.values().sum::<usize>(),
        20,
        "{support:?}\n{}",
        s.tail()
    );
    // Longest-idle over 10 agents with 20 calls: everyone works, nobody
    // takes more than a fair share plus one.
    assert_eq!(
        support.len(),
        10,
        "every agent took support calls: {support:?}"
    );
    assert!(
        support.values().all(|&n| (1..=3).contains(&n)),
        "spread fairly: {support:?}"
    );
    assert_eq!(queue_stat(&s, "support", "answered"), 20, "{}", s.tail());
    assert_eq!(queue_stat(&s, "sales", "answered"), 10, "{}", s.tail());
    assert_eq!(queue_stat(&s, "support", "abandoned"), 0);

    // Every call is in the store with its agent and queue, and waits in
    // the CRM outbox (no webhook is configured).
    let store = Store::open(&s.data_dir.path().join("var")).expect("open the store");
    let stored = store
        .list_calls(&CallFilter {
            limit: 100,
            ..CallFilter::default()
        })
        .expect("list calls");
    assert_eq!(stored.len(), 30, "{}", s.tail());
    for (queue, n) in [("support", 20), ("sales", 10)] {
        let in_queue: Vec<_> = stored
            .iter()
            .filter(|c| c.queue.as_deref() == Some(queue))
            .collect();
        assert_eq!(in_queue.len(), n, "{queue}");
        assert!(in_queue.iter().all(|c| c.agent.is_some()), "{in_queue:?}");
    }
    let first = &stored[0];
    assert_eq!(first.record["id"], first.id.as_str());
    assert_eq!(first.record["caller"]["user"], "+815012345678");
    assert_eq!(store.outbox_len().expect("outbox"), 30);
}

#[test]
fn a_caller_who_hangs_up_while_queued_is_counted_abandoned() {
    // No agent has a phone: the caller waits (the queue accepts callers
    // while empty), hears the queue, gives up after 2 s.
    let a = appliance(Options::new(Driver::Epoll));
    let run = customers(&a, "acd_caller_abandon.xml", "200", 1, 1);
    run.assert_all_succeeded(1, &format!("the abandoning caller\n{}", a.stderr_tail()));
    let s = a.stop();
    assert_eq!(queue_stat(&s, "support", "offered"), 1, "{}", s.tail());
    assert_eq!(queue_stat(&s, "support", "abandoned"), 1, "{}", s.tail());
    assert_eq!(queue_stat(&s, "support", "answered"), 0);
    let recs = records(&s);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0].get("path").map(String::as_str),
        Some("queue:support")
    );
    assert_eq!(
        recs[0].get("hung_up_by").map(String::as_str),
        Some("caller")
    );
    let store = Store::open(&s.data_dir.path().join("var")).expect("open the store");
    let stored = store
        .list_calls(&CallFilter {
            queue: Some("support".into()),
            limit: 10,
            ..CallFilter::default()
        })
        .expect("list calls");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].agent, None, "nobody answered");
    assert_eq!(stored[0].record["path"][0], "queue:support");
}

/// SIPp's RFC 2833 capture of `key` (`/usr/share/sip-tester/dtmf_2833_*.pcap`),
/// copied into `dir` as the `nth` press of a call.
///
/// SIPp's twelve captures come from one recorded session: one SSRC, and
/// sequence numbers and timestamps that grow in the order the keys were
/// recorded (1, 2, … 9, *, #, 0). Replayed in another order, or one key
/// twice, a press would carry a timestamp older than the one before it,
/// which an RFC 4733 receiver rightly takes for a late packet of an
/// earlier press and drops. So the copy keeps every packet and its event
/// payload and gives the RTP header the sequence numbers and timestamp of
/// the `nth` press: they grow from press to press as a phone's would.
fn press_pcap(dir: &std::path::Path, key: char, nth: usize) -> std::path::PathBuf {
    let name = match key {
        '#' => "pound".to_owned(),
        '*' => "star".to_owned(),
        d => d.to_string(),
    };
    let mut pcap = std::fs::read(format!("/usr/share/sip-tester/dtmf_2833_{name}.pcap"))
        .expect("SIPp's DTMF captures (Debian sip-tester)");
    // Little-endian pcap, Ethernet: a 24-byte file header, then per packet
    // a 16-byte record header and Ethernet (14) + IPv4 (20) + UDP (8) + RTP.
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let mut at = 24;
    let mut first_seq = None;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let rtp = at + 16 + 14 + 20 + 8;
        assert!(rtp + 12 <= at + 16 + len, "an RTP packet in each record");
        let seq = u16::from_be_bytes([pcap[rtp + 2], pcap[rtp + 3]]);
        let first = *first_seq.get_or_insert(seq);
        let new_seq = (100 + 20 * nth as u16).wrapping_add(seq.wrapping_sub(first));
        pcap[rtp + 2..rtp + 4].copy_from_slice(&new_seq.to_be_bytes());
        let ts = 80_000 + 8_000 * nth as u32;
        pcap[rtp + 4..rtp + 8].copy_from_slice(&ts.to_be_bytes());
        at += 16 + len;
    }
    let path = dir.join(format!("press{nth}_{name}.pcap"));
    std::fs::write(&path, pcap).expect("write the capture");
    path
}

/// A customer calling the IVR (300) and pressing `keys` with SIPp's RFC
/// 2833 captures ([`press_pcap`]), then waiting for the agent to hang up.
/// The scenario and its captures live in the returned directory.
fn ivr_caller(keys: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let base =
        std::fs::read_to_string(format!("{SIPP_DIR}/acd_caller.xml")).expect("read acd_caller.xml");
    let mut presses = String::from("  <pause milliseconds=\"1000\"/>\n");
    for (nth, k) in keys.chars().enumerate() {
        let pcap = press_pcap(dir.path(), k, nth);
        presses += &format!(
            "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n  <pause milliseconds=\"400\"/>\n",
            pcap.display()
        );
    }
    let at = base
        .find("  <recv request=\"BYE\"")
        .expect("acd_caller.xml waits for a BYE");
    let text = format!("{}{presses}{}", &base[..at], &base[at..]);
    let path = dir.path().join("ivr_caller.xml");
    std::fs::write(&path, text).expect("write the scenario");
    (dir, path)
}

#[test]
fn ivr_300_routes_1_to_sales_2_to_support_and_9_carries_the_account() {
    let a = appliance(Options::new(Driver::IoUring));
    let phones = agents(&a, 1001..=1010);
    let mut paths = Vec::new();
    for keys in ["1", "2", "94711#"] {
        let (_dir, scenario) = ivr_caller(keys);
        let run = Sipp::new(scenario.to_str().expect("utf-8 path"), a.udp_addr(), "u1")
            .timeout_s(60)
            .args(&["-s", "300"])
            .args(ABORT_UNEXPECTED)
            .run();
        run.assert_all_succeeded(
            1,
            &format!("IVR caller pressing {keys}\n{}", a.stderr_tail()),
        );
        paths.push(keys);
    }
    // The agent who took the account call saw it in the INVITE.
    let deadline = Instant::now() + Duration::from_secs(5);
    let runs: Vec<SippRun> = phones.into_iter().map(|p| p.proc.wait(deadline)).collect();
    let with_account: Vec<_> = runs
        .iter()
        .flat_map(|r| r.received_requests("INVITE"))
        .filter_map(|m| m.header("X-Switchboard-Data"))
        .collect();
    assert_eq!(with_account, ["account=4711"]);

    let s = a.stop();
    let recs = records(&s);
    let ivr: Vec<_> = recs
        .iter()
        .filter(|r| r.get("to").map(String::as_str) == Some("300"))
        .collect();
    assert_eq!(ivr.len(), 3, "{}", s.tail());
    let path = |r: &BTreeMap<String, String>| r.get("path").cloned().unwrap_or_default();
    assert_eq!(path(ivr[0]), "ivr:main>queue:sales");
    assert!(
        answered_by(ivr[0]).is_some_and(|a| ("1001"..="1005").contains(&a.as_str())),
        "1 → a sales agent: {:?}",
        ivr[0]
    );
    assert_eq!(path(ivr[1]), "ivr:main>queue:support");
    assert!(answered_by(ivr[1]).is_some());
    assert_eq!(path(ivr[2]), "ivr:main>ivr:account>queue:support");
    assert_eq!(ivr[2].get("data").map(String::as_str), Some("account=4711"));
    assert_eq!(ivr[2].get("digits").map(String::as_str), Some("94711#"));
}
