use super::*;

fn rec(id: &str, ended_ms: i64) -> NewRecord {
    NewRecord {
        id: id.to_string(),
        started_ms: ended_ms - 60_000,
        ended_ms,
        caller: "+15550001".to_string(),
        dialled: "+15559000".to_string(),
        agent: Some("alice".to_string()),
        queue: Some("sales".to_string()),
        disposition: Some("answered".to_string()),
        json: format!(r#"{{"id":"{id}","ended_ms":{ended_ms}}}"#),
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path()).expect("open store")
}

fn count(store: &Store, table: &str) -> i64 {
    store
        .conn
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[test]
fn open_creates_dir_schema_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let store = Store::open(&data).unwrap();
    assert_eq!(store.path(), data.join(DB_FILE));
    assert!(data.join(DB_FILE).is_file());
    let c = &store.conn;
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // NORMAL is 1.
    let sync: i64 = c
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1);
    let fk: i64 = c
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    for table in ["calls", "outbox", "dead_letters"] {
        assert_eq!(count(&store, table), 0);
    }
    let indexes: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls' \
             AND name LIKE 'calls_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 5);
}

#[test]
fn commit_writes_call_and_outbox_row_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let r = rec("r1", 1_000_000);
    store.commit_record(&r).unwrap();
    let call = store.get_call("r1").unwrap().expect("call stored");
    assert_eq!(call.caller, r.caller);
    assert_eq!(call.record["id"], "r1");
    let due = store.due(r.ended_ms, 10).unwrap();
    assert_eq!(due.len(), 1);
    let item = &due[0];
    assert_eq!(item.record_id, "r1");
    assert_eq!(item.body, r.json);
    assert_eq!(item.attempts, 0);
    assert_eq!(item.next_attempt_ms, r.ended_ms);
    assert_eq!(item.created_ms, r.ended_ms);
    assert_eq!(item.last_error, None);
}

#[test]
fn commit_failure_rolls_back_both_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    // The call insert succeeds, then the outbox insert is refused.
    store
        .conn
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox \
             BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;",
        )
        .unwrap();
    let err = store.commit_record(&rec("r1", 1_000)).unwrap_err();
    assert!(err.to_string().contains("simulated failure"), "{err}");
    assert!(err.to_string().contains(DB_FILE), "{err}");
    assert_eq!(count(&store, "calls"), 0);
    assert_eq!(count(&store, "outbox"), 0);
    // Once the cause is gone the same record commits (nothing was left
    // half-written to make it look like a duplicate).
    store.conn.execute_batch("DROP TRIGGER refuse;").unwrap();
    store.commit_record(&rec("r1", 1_000)).unwrap();
    assert_eq!(count(&store, "calls"), 1);
    assert_eq!(store.outbox_len().unwrap(), 1);
}

#[test]
fn commit_refuses_invalid_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut r = rec("r1", 1_000);
    r.json = "{not json".to_string();
    let err = store.commit_record(&r).unwrap_err();
    assert!(matches!(err, StoreError::InvalidJson { .. }), "{err}");
    assert_eq!(count(&store, "calls"), 0);
    assert_eq!(store.outbox_len().unwrap(), 0);
}

#[test]
fn commit_same_id_twice_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.commit_record(&rec("r1", 1_000)).unwrap();
    // Even after delivery, a retried commit queues nothing.
    let mut again = rec("r1", 2_000);
    again.caller = "+1999".to_string();
    store.commit_record(&again).unwrap();
    assert_eq!(count(&store, "calls"), 1);
    assert_eq!(store.outbox_len().unwrap(), 1);
    assert_eq!(store.get_call("r1").unwrap().unwrap().ended_ms, 1_000);
    let id = store.due(i64::MAX, 10).unwrap()[0].id;
    store.delivered(id).unwrap();
    store.commit_record(&rec("r1", 1_000)).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 0);
}

#[test]
fn due_is_earliest_first_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    assert_eq!(store.next_due_ms().unwrap(), None);
    for (id, ended) in [("c", 3_000), ("a", 1_000), ("d", 4_000), ("b", 2_000)] {
        store.commit_record(&rec(id, ended)).unwrap();
    }
    assert_eq!(store.next_due_ms().unwrap(), Some(1_000));
    let ids = |items: Vec<OutboxItem>| -> Vec<String> {
        items.into_iter().map(|i| i.record_id).collect()
    };
    assert_eq!(ids(store.due(999, 10).unwrap()), Vec::<String>::new());
    assert_eq!(ids(store.due(3_000, 10).unwrap()), ["a", "b", "c"]);
    assert_eq!(ids(store.due(10_000, 2).unwrap()), ["a", "b"]);
    assert_eq!(ids(store.due(10_000, 0).unwrap()), Vec::<String>::new());
    // Same due time: the older row first.
    store.commit_record(&rec("e", 1_000)).unwrap();
    assert_eq!(ids(store.due(1_000, 10).unwrap()), ["a", "e"]);
}

#[test]
fn failed_counts_attempts_and_reschedules() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.commit_record(&rec("a", 1_000)).unwrap();
    store.commit_record(&rec("b", 2_000)).unwrap();
    let a = store.due(1_000, 1).unwrap()[0].id;
    store.failed(a, 5_000, "connection refused").unwrap();
    store.failed(a, 9_000, "HTTP 503").unwrap();
    assert_eq!(store.next_due_ms().unwrap(), Some(2_000));
    let due = store.due(5_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].record_id, "b");
    let due = store.due(9_000, 10).unwrap();
    assert_eq!(due[1].id, a);
    assert_eq!(due[1].attempts, 2);
    assert_eq!(due[1].next_attempt_ms, 9_000);
    assert_eq!(due[1].last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(store.outbox_len().unwrap(), 2);
}

#[test]
fn delivered_removes_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.commit_record(&rec("a", 1_000)).unwrap();
    let id = store.due(1_000, 1).unwrap()[0].id;
    store.delivered(id).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 0);
    assert_eq!(store.next_due_ms().unwrap(), None);
    // The call stays.
    assert!(store.get_call("a").unwrap().is_some());
    let err = store.delivered(id).unwrap_err();
    assert!(matches!(err, StoreError::NoSuchOutboxRow { .. }), "{err}");
    assert!(matches!(
        store.failed(id, 0, "x").unwrap_err(),
        StoreError::NoSuchOutboxRow { .. }
    ));
}

#[test]
fn dead_letter_moves_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.commit_record(&rec("a", 1_000)).unwrap();
    store.commit_record(&rec("b", 2_000)).unwrap();
    let a = store.due(1_000, 1).unwrap()[0].clone();
    store.failed(a.id, 1_500, "timeout").unwrap();
    store.dead_letter(a.id, 1_600, "HTTP 400").unwrap();
    assert_eq!(store.outbox_len().unwrap(), 1);
    assert_eq!(store.due(i64::MAX, 10).unwrap()[0].record_id, "b");
    let dead = store.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].failed_ms, 1_600);
    assert_eq!(dead[0].item.id, a.id);
    assert_eq!(dead[0].item.record_id, "a");
    assert_eq!(dead[0].item.body, a.body);
    assert_eq!(dead[0].item.attempts, 2);
    assert_eq!(dead[0].item.last_error.as_deref(), Some("HTTP 400"));
    assert_eq!(dead[0].item.created_ms, 1_000);
    // Unknown ids are refused and change nothing.
    let err = store.dead_letter(a.id, 1_700, "again").unwrap_err();
    assert!(matches!(err, StoreError::NoSuchOutboxRow { .. }), "{err}");
    assert_eq!(store.dead_letters(10).unwrap().len(), 1);
    // Newest first, limited.
    let b = store.due(i64::MAX, 1).unwrap()[0].id;
    store.dead_letter(b, 3_000, "gone").unwrap();
    let dead = store.dead_letters(1).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.record_id, "b");
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(&dir);
        store.commit_record(&rec("a", 1_000)).unwrap();
        store.commit_record(&rec("b", 2_000)).unwrap();
        store.commit_record(&rec("c", 3_000)).unwrap();
        let due = store.due(i64::MAX, 10).unwrap();
        store.delivered(due[0].id).unwrap();
        store.failed(due[1].id, 7_000, "timeout").unwrap();
        store.dead_letter(due[2].id, 4_000, "HTTP 400").unwrap();
    }
    let store = open(&dir);
    assert_eq!(count(&store, "calls"), 3);
    let due = store.due(i64::MAX, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].record_id, "b");
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].next_attempt_ms, 7_000);
    assert_eq!(store.dead_letters(10).unwrap()[0].item.record_id, "c");
    // Reopening an existing file does not recreate the schema.
    drop(store);
    let store = open(&dir);
    assert_eq!(count(&store, "calls"), 3);
}

/// What a kill -9 leaves on disk: the database and its WAL exactly as the
/// last commit left them, never closed or checkpointed. A real kill -9 of
/// the appliance is covered by the CTI issue's integration test.
#[test]
fn files_left_unclosed_after_commit_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    for i in 0..50 {
        store
            .commit_record(&rec(&format!("r{i}"), 1_000 + i))
            .unwrap();
    }
    // Copy the files while the connection is still open (no close-time
    // checkpoint): the commits live in the WAL.
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    for name in [DB_FILE.to_string(), format!("{DB_FILE}-wal")] {
        std::fs::copy(dir.path().join(&name), crashed.path().join(&name)).unwrap();
    }
    // And the original is never closed either.
    std::mem::forget(store);
    let store = open(&crashed);
    assert_eq!(count(&store, "calls"), 50);
    assert_eq!(store.outbox_len().unwrap(), 50);
    let store = open(&dir);
    assert_eq!(count(&store, "calls"), 50);
    assert_eq!(store.outbox_len().unwrap(), 50);
}

#[test]
fn list_and_get_filter() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let mut r = rec("a", 1_000);
    r.agent = Some("alice".to_string());
    r.queue = Some("sales".to_string());
    r.caller = "+100".to_string();
    r.dialled = "+900".to_string();
    store.commit_record(&r).unwrap();
    let mut r = rec("b", 2_000);
    r.agent = Some("bob".to_string());
    r.queue = Some("support".to_string());
    r.caller = "+200".to_string();
    r.dialled = "+900".to_string();
    store.commit_record(&r).unwrap();
    let mut r = rec("c", 3_000);
    r.agent = None;
    r.queue = None;
    r.disposition = None;
    r.caller = "+900".to_string();
    r.dialled = "+300".to_string();
    store.commit_record(&r).unwrap();
    let mut r = rec("d", 4_000);
    r.agent = Some("alice".to_string());
    r.queue = Some("support".to_string());
    r.caller = "+100".to_string();
    r.dialled = "+901".to_string();
    store.commit_record(&r).unwrap();

    let list = |f: CallFilter| -> Vec<String> {
        store
            .list_calls(&f)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect()
    };
    let all = CallFilter {
        limit: 100,
        ..CallFilter::default()
    };
    assert_eq!(list(all.clone()), ["d", "c", "b", "a"]);
    assert_eq!(
        list(CallFilter {
            limit: 2,
            ..all.clone()
        }),
        ["d", "c"]
    );
    assert_eq!(
        list(CallFilter {
            since_ms: Some(2_000),
            ..all.clone()
        }),
        ["d", "c", "b"]
    );
    assert_eq!(
        list(CallFilter {
            agent: Some("alice".to_string()),
            ..all.clone()
        }),
        ["d", "a"]
    );
    assert_eq!(
        list(CallFilter {
            queue: Some("support".to_string()),
            ..all.clone()
        }),
        ["d", "b"]
    );
    assert_eq!(
        list(CallFilter {
            number: Some("+900".to_string()),
            ..all.clone()
        }),
        ["c", "b", "a"]
    );
    assert_eq!(
        list(CallFilter {
            since_ms: Some(1_500),
            agent: Some("alice".to_string()),
            queue: Some("support".to_string()),
            number: Some("+100".to_string()),
            limit: 10,
        }),
        ["d"]
    );
    assert_eq!(
        list(CallFilter {
            agent: Some("nobody".to_string()),
            ..all.clone()
        }),
        Vec::<String>::new()
    );

    let c = store.get_call("c").unwrap().unwrap();
    assert_eq!(c.started_ms, 3_000 - 60_000);
    assert_eq!(c.ended_ms, 3_000);
    assert_eq!(c.caller, "+900");
    assert_eq!(c.dialled, "+300");
    assert_eq!(c.agent, None);
    assert_eq!(c.queue, None);
    assert_eq!(c.disposition, None);
    assert_eq!(c.record["ended_ms"], 3_000);
    assert_eq!(store.get_call("zzz").unwrap(), None);
}

#[test]
fn non_sqlite_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a database"), "{msg}");
}

#[test]
fn corrupt_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = open(&dir);
        store.commit_record(&rec("a", 1_000)).unwrap();
    }
    // Keep the SQLite header, garble every page after it.
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xa5;
    }
    std::fs::write(&path, bytes).unwrap();
    // journal_mode=WAL reads the schema, so the damage shows at open.
    let err = Store::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("malformed"), "{msg}");
}

#[test]
fn data_dir_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"").unwrap();
    let err = Store::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 2, .. }),
        "{err}"
    );
}

#[test]
fn outbox_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    store.commit_record(&rec("a", 1_000)).unwrap();
    let a = store.due(i64::MAX, 1).unwrap()[0].id;
    store.dead_letter(a, 2_000, "HTTP 400").unwrap();
    // The newest row is gone from the outbox; the next one gets a new id,
    // so it can be dead-lettered too.
    store.commit_record(&rec("b", 3_000)).unwrap();
    let b = store.due(i64::MAX, 1).unwrap()[0].id;
    assert!(b > a, "{b} reuses {a}");
    store.dead_letter(b, 4_000, "HTTP 400").unwrap();
    store.commit_record(&rec("c", 5_000)).unwrap();
    let c = store.due(i64::MAX, 1).unwrap()[0].id;
    store.delivered(c).unwrap();
    drop(store);
    let mut store = open(&dir);
    store.commit_record(&rec("d", 6_000)).unwrap();
    assert!(store.due(i64::MAX, 1).unwrap()[0].id > c);
    assert_eq!(store.dead_letters(10).unwrap().len(), 2);
}

#[test]
fn list_calls_uses_an_index_for_every_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let some = || Some("x".to_string());
    for (since_ms, agent, queue, number) in [
        (None, None, None, None),
        (Some(1), None, None, None),
        (None, some(), None, None),
        (None, None, some(), None),
        (None, None, None, some()),
        (Some(1), some(), some(), some()),
    ] {
        let filter = CallFilter {
            since_ms,
            agent,
            queue,
            number,
            limit: 10,
        };
        let _ = store.list_calls(&filter).unwrap();
        let limit = i64::from(filter.limit);
        let (sql, args) = list_calls_query(&filter, &limit);
        let plan: Vec<String> = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(args.as_slice(), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            !plan.iter().any(|line| line == "SCAN calls"),
            "{filter:?}: {plan:?}"
        );
        // Newest first straight from the index, except for the caller OR
        // dialled union, which sorts its (few) matches.
        let union = plan.iter().any(|line| line == "MULTI-INDEX OR");
        assert!(
            union || !plan.iter().any(|line| line.contains("TEMP B-TREE")),
            "{filter:?}: {plan:?}"
        );
    }
}

#[test]
fn store_moves_to_the_control_plane_thread() {
    fn is_send<T: Send>() {}
    is_send::<Store>();
}

#[test]
fn concurrent_first_opens_both_succeed() {
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let opens: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Store::open(dir.path()).map(drop)
                    })
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        });
        let mut store = open(&dir);
        store.commit_record(&rec("a", 1_000)).unwrap();
    }
}
