#[test]
fn placeholder() {
    let s = serde_json::json!({"type":"object"});
    let v = jsonschema::validator_for(&s).unwrap();
    assert!(v.is_valid(&serde_json::json!({})));
}
