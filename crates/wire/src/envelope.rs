//! Signed envelopes: HMAC-SHA256 over the message, as the Python seed does.
//!
//! A signed message is the MessagePack map
//! `{"arrpc.sign": <lowercase hex HMAC-SHA256(secret, data)>, "data": <bin>}`
//! where `data` holds the MessagePack message itself. The receiver verifies
//! the MAC and passes `data` on verbatim.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::value_len;

type HmacSha256 = Hmac<Sha256>;

const SIGN_KEY: &str = "arrpc.sign";
const DATA_KEY: &str = "data";

/// Why an envelope was not accepted. The peer only ever learns the seed's
/// one generic auth error; these reasons are for the receiver's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("message is not a signed envelope")]
    NotAnEnvelope,
    #[error("envelope has no `{0}` field of the right type")]
    MissingField(&'static str),
    #[error("signature is not hex")]
    SignatureNotHex,
    #[error("signature does not match any accepted secret")]
    BadSignature,
}

/// Wraps the MessagePack `message` in an envelope signed with `secret`.
pub fn sign(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mac = hex::encode(mac(secret, message).finalize().into_bytes());
    let mut out = Vec::with_capacity(message.len() + mac.len() + 24);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_map_len(&mut out, 2);
    let _ = rmp::encode::write_str(&mut out, SIGN_KEY);
    let _ = rmp::encode::write_str(&mut out, &mac);
    let _ = rmp::encode::write_str(&mut out, DATA_KEY);
    let _ = rmp::encode::write_bin(&mut out, message);
    out
}

/// Checks the envelope in `frame` against each accepted secret and returns
/// the signed message bytes (a sub-slice of `frame`).
///
/// Comparison is constant-time per secret.
pub fn verify<'a, S: AsRef<[u8]>>(frame: &'a [u8], secrets: &[S]) -> Result<&'a [u8], AuthError> {
    let (signature, data) = open(frame)?;
    let signature = hex::decode(signature).map_err(|_| AuthError::SignatureNotHex)?;
    let matches = secrets
        .iter()
        .any(|secret| mac(secret.as_ref(), data).verify_slice(&signature).is_ok());
    if matches {
        Ok(data)
    } else {
        Err(AuthError::BadSignature)
    }
}

fn mac(secret: &[u8], message: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac
}

/// Splits an envelope into its signature text and data bytes; other keys
/// are skipped so the envelope can grow without breaking older readers.
fn open(frame: &[u8]) -> Result<(&str, &[u8]), AuthError> {
    let mut rest = frame;
    let entries = rmp::decode::read_map_len(&mut rest).map_err(|_| AuthError::NotAnEnvelope)?;
    let (mut signature, mut data) = (None, None);
    for _ in 0..entries {
        let key = read_str(&mut rest);
        let value_end = value_len(rest).ok_or(AuthError::NotAnEnvelope)?;
        let (mut value, after) = rest.split_at(value_end);
        rest = after;
        match key {
            Some(SIGN_KEY) => {
                signature = Some(read_str(&mut value).ok_or(AuthError::MissingField(SIGN_KEY))?);
            }
            Some(DATA_KEY) => {
                let len = rmp::decode::read_bin_len(&mut value)
                    .map_err(|_| AuthError::MissingField(DATA_KEY))?;
                data = value.get(..len as usize);
            }
            _ => {}
        }
    }
    Ok((
        signature.ok_or(AuthError::MissingField(SIGN_KEY))?,
        data.ok_or(AuthError::MissingField(DATA_KEY))?,
    ))
}

/// Reads a MessagePack string, advancing `buf`; `None` (and `buf` past the
/// value) when it is some other type.
fn read_str<'a>(buf: &mut &'a [u8]) -> Option<&'a str> {
    let start = *buf;
    let skip = value_len(start)?;
    *buf = &start[skip..];
    let mut value = &start[..skip];
    let len = rmp::decode::read_str_len(&mut value).ok()? as usize;
    std::str::from_utf8(value.get(..len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the Python seed's `sign_and_wrap_msg(packb({"foo": "bar"}), "secret")` returns.
    const SEED_SIGNED: &str = "82aa61727270632e7369676ed940616365633735333765383466623334636461\
        6164656262356166653461626535373365303935343130653465666230656165\
        3265613730393732303463643766a464617461c40981a3666f6fa3626172";

    #[test]
    fn round_trip_returns_the_exact_message_bytes() {
        let message = [0x81, 0xa3, b'f', b'o', b'o', 0xa3, b'b', b'a', b'r'];
        let envelope = sign(b"secret", &message);
        assert_eq!(envelope, hex::decode(SEED_SIGNED).unwrap());
        assert_eq!(verify(&envelope, &[b"secret"]), Ok(&message[..]));
    }

    #[test]
    fn any_accepted_secret_verifies() {
        let envelope = sign(b"old", &[0x01]);
        assert_eq!(verify(&envelope, &[&b"new"[..], b"old"]), Ok(&[0x01][..]));
        assert_eq!(verify(&envelope, &[b"new"]), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_and_malformed_envelopes_are_refused() {
        let mut envelope = sign(b"k", &[0x05]);
        *envelope.last_mut().unwrap() = 0x06;
        assert_eq!(verify(&envelope, &[b"k"]), Err(AuthError::BadSignature));
        assert_eq!(verify(&[0x05], &[b"k"]), Err(AuthError::NotAnEnvelope));
        // {"data": bin(1)}: no signature.
        let no_sign = [0x81, 0xa4, b'd', b'a', b't', b'a', 0xc4, 0x01, 0x05];
        assert_eq!(
            verify(&no_sign, &[b"k"]),
            Err(AuthError::MissingField(SIGN_KEY))
        );
        // {"arrpc.sign": "zz", "data": 5}: data is not binary.
        let mut bad = vec![0x82, 0xaa];
        bad.extend(b"arrpc.sign");
        bad.extend([0xa2, b'z', b'z', 0xa4]);
        bad.extend(b"data");
        bad.push(0x05);
        assert_eq!(
            verify(&bad, &[b"k"]),
            Err(AuthError::MissingField(DATA_KEY))
        );
    }
}
