//! Webhook body signatures: the `X-Switchboard-Signature` header.
//!
//! CONTRACT ("Control plane"): every webhook `POST` carries
//! `X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of the body with
//! crm.webhook.secret>`. [`signature`] makes the value (lowercase hex);
//! [`verify`] checks one in constant time, for our own tests and for
//! receivers written in Rust.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "X-Switchboard-Signature";

/// The scheme prefix of the header value.
const PREFIX: &str = "sha256=";

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // invariant: HMAC accepts keys of any length (long keys are hashed).
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac
}

/// The header value for `body`: `sha256=` and the lowercase hex HMAC-SHA256.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!(
        "{PREFIX}{}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of `body` under `secret`.
///
/// Surrounding whitespace is ignored and hex digits may be of either case;
/// the prefix must be `sha256=`. The MAC comparison is constant-time
/// (`Mac::verify_slice`); a malformed value is simply `false`.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_tag) = header.trim().strip_prefix(PREFIX) else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_tag) else {
        return false;
    };
    mac(secret, body).verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // python3 -c "import hmac,hashlib;print(hmac.new(b'demo-secret',b'{}',hashlib.sha256).hexdigest())"
    const DEMO_EMPTY_OBJECT: &str =
        "sha256=e404a1be4fd80006d10b40fe3ba6549b6ce3ab4f3dc3bc2352226d4b5e311f68";

    #[test]
    fn signature_matches_python_hmac_vector() {
        assert_eq!(signature(b"demo-secret", b"{}"), DEMO_EMPTY_OBJECT);
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_own_signature_and_uppercase_hex() {
        assert!(verify(b"demo-secret", b"{}", DEMO_EMPTY_OBJECT));
        let upper = format!("sha256={}", DEMO_EMPTY_OBJECT[7..].to_uppercase());
        assert!(verify(b"demo-secret", b"{}", &format!(" {upper} ")));
    }

    #[test]
    fn verify_rejects_wrong_secret_body_or_format() {
        assert!(!verify(b"other", b"{}", DEMO_EMPTY_OBJECT));
        assert!(!verify(b"demo-secret", b"{ }", DEMO_EMPTY_OBJECT));
        assert!(!verify(b"demo-secret", b"{}", &DEMO_EMPTY_OBJECT[7..]));
        assert!(!verify(b"demo-secret", b"{}", "sha1=e404a1be"));
        assert!(!verify(b"demo-secret", b"{}", "sha256=zz"));
        assert!(!verify(b"demo-secret", b"{}", "sha256="));
        // A truncated tag is not accepted.
        assert!(!verify(b"demo-secret", b"{}", &DEMO_EMPTY_OBJECT[..40]));
    }
}
