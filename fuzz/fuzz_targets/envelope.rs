//! Signed, stamped and trace envelopes (`arrpc_wire::envelope`,
//! `arrpc_wire::trace`) on arbitrary bytes.
//!
//! Checked: reading any bytes as an envelope never panics; a message signed
//! (plain or stamped) verifies to itself under its secret only, and each
//! kind is refused where the other is expected; a traced value unwraps to
//! itself, and anything else wrapped is reported as bad data.

#![no_main]

use arrpc_wire::envelope::{self, AuthError, Stamp, Stamped};
use arrpc_wire::frame::is_single_value;
use arrpc_wire::trace::{self, Traced, Unwrapped};
use libfuzzer_sys::fuzz_target;

const SECRETS: [&[u8]; 2] = [b"k", b""];

fuzz_target!(|input: &[u8]| {
    // Any bytes, read as each kind of envelope.
    let _ = envelope::verify(input, &SECRETS);
    let _ = envelope::verify_stamped(input, &SECRETS);
    let _ = envelope::unverified_data(input);
    let _ = trace::unwrap(input);
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = trace::check_traceparent(text);
    }

    // The first byte splits a secret off the front; the rest is the message.
    let Some((&cut, rest)) = input.split_first() else {
        return;
    };
    let (secret, message) = rest.split_at(usize::from(cut).min(rest.len()));
    let other: &[u8] = if secret == b"other" {
        b"another"
    } else {
        b"other"
    };

    let signed = envelope::sign(secret, message);
    assert_eq!(envelope::verify(&signed, &[secret]), Ok(message));
    assert_eq!(envelope::verify(&signed, &[other, secret]), Ok(message));
    assert_eq!(
        envelope::verify(&signed, &[other]),
        Err(AuthError::BadSignature)
    );
    assert!(envelope::verify_stamped(&signed, &[secret]).is_err());
    assert_eq!(envelope::unverified_data(&signed), Some(message));

    let stamp = Stamp {
        timestamp_ms: u64::from_le_bytes(*message.first_chunk().unwrap_or(&[0; 8])),
        nonce: &secret[..secret.len().min(16)],
    };
    let stamped = envelope::sign_stamped(secret, message, stamp);
    assert_eq!(
        envelope::verify_stamped(&stamped, &[secret]),
        Ok(Stamped {
            data: message,
            stamp
        })
    );
    assert_eq!(
        envelope::verify_stamped(&stamped, &[other]),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        envelope::verify(&stamped, &[secret]),
        Err(AuthError::BadSignature)
    );

    let traceparent = String::from_utf8_lossy(secret);
    let traced = trace::wrap(&traceparent, message);
    let expected = if is_single_value(message) {
        Unwrapped::Traced(Traced {
            traceparent: &traceparent,
            data: message,
        })
    } else {
        Unwrapped::BadData
    };
    assert_eq!(trace::unwrap(&traced), expected);
});
