//! Signed envelopes: HMAC-SHA256 over the message, as the Python arrpc package
//! does.
//!
//! A signed message is the MessagePack map
//! `{"arrpc.sign": <lowercase hex HMAC-SHA256(secret, data)>, "data": <bin>}`
//! where `data` holds the MessagePack message itself. The receiver verifies
//! the MAC and passes `data` on verbatim.
//!
//! A *stamped* envelope (replay protection, beyond the Python arrpc package)
//! adds `"arrpc.ts": <uint: unix time in ms>` and `"arrpc.nonce": <bin>`, and
//! its MAC covers all three: HMAC-SHA256 over the MessagePack array
//! `["arrpc.stamped.v1", ts, bin(nonce), bin(data)]`. MessagePack is
//! self-delimiting, so no two (ts, nonce, data) triples share a MAC input, and
//! the leading tag keeps a stamped MAC from ever equalling a plain signed
//! envelope's MAC over an ordinary message.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::value_len;

type HmacSha256 = Hmac<Sha256>;

const SIGN_KEY: &str = "arrpc.sign";
const DATA_KEY: &str = "data";
const TS_KEY: &str = "arrpc.ts";
const NONCE_KEY: &str = "arrpc.nonce";
const STAMP_TAG: &str = "arrpc.stamped.v1";

/// Why an envelope was not accepted. The peer only ever learns the Python arrpc
/// package's one generic auth error; these reasons are for the receiver's log.
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

/// The replay-protection fields of a stamped envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'a> {
    /// When the sender signed, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Random bytes the sender never reuses.
    pub nonce: &'a [u8],
}

/// A verified stamped envelope: its message and stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped<'a> {
    pub data: &'a [u8],
    pub stamp: Stamp<'a>,
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

/// Wraps `message` in a stamped envelope signed with `secret`.
pub fn sign_stamped(secret: &[u8], message: &[u8], stamp: Stamp<'_>) -> Vec<u8> {
    let mac = hex::encode(stamped_mac(secret, message, stamp).finalize().into_bytes());
    let mut out = Vec::with_capacity(message.len() + stamp.nonce.len() + mac.len() + 56);
    let _ = rmp::encode::write_map_len(&mut out, 4);
    let _ = rmp::encode::write_str(&mut out, SIGN_KEY);
    let _ = rmp::encode::write_str(&mut out, &mac);
    let _ = rmp::encode::write_str(&mut out, TS_KEY);
    let _ = rmp::encode::write_uint(&mut out, stamp.timestamp_ms);
    let _ = rmp::encode::write_str(&mut out, NONCE_KEY);
    let _ = rmp::encode::write_bin(&mut out, stamp.nonce);
    let _ = rmp::encode::write_str(&mut out, DATA_KEY);
    let _ = rmp::encode::write_bin(&mut out, message);
    out
}

/// Checks the envelope in `frame` against each accepted secret and returns
/// the signed message bytes (a sub-slice of `frame`).
///
/// Comparison is constant-time per secret.
pub fn verify<'a, S: AsRef<[u8]>>(frame: &'a [u8], secrets: &[S]) -> Result<&'a [u8], AuthError> {
    let fields = open(frame)?;
    let (signature, data) = fields.signed()?;
    check(secrets, &signature, |secret| mac(secret, data))?;
    Ok(data)
}

/// Like [`verify`] for a stamped envelope; a plain signed envelope is refused.
///
/// Only the MAC is checked here: the caller judges the stamp's age and
/// whether its nonce was seen before.
pub fn verify_stamped<'a, S: AsRef<[u8]>>(
    frame: &'a [u8],
    secrets: &[S],
) -> Result<Stamped<'a>, AuthError> {
    let fields = open(frame)?;
    let (signature, data) = fields.signed()?;
    let stamp = Stamp {
        timestamp_ms: fields.timestamp.ok_or(AuthError::MissingField(TS_KEY))?,
        nonce: fields.nonce.ok_or(AuthError::MissingField(NONCE_KEY))?,
    };
    check(secrets, &signature, |secret| {
        stamped_mac(secret, data, stamp)
    })?;
    Ok(Stamped { data, stamp })
}

/// Constant-time comparison of `signature` with the MAC under each secret.
fn check<S: AsRef<[u8]>>(
    secrets: &[S],
    signature: &[u8],
    mac_for: impl Fn(&[u8]) -> HmacSha256,
) -> Result<(), AuthError> {
    let matches = secrets
        .iter()
        .any(|secret| mac_for(secret.as_ref()).verify_slice(signature).is_ok());
    if matches {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

fn mac(secret: &[u8], message: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac
}

fn stamped_mac(secret: &[u8], message: &[u8], stamp: Stamp<'_>) -> HmacSha256 {
    let mut input = Vec::with_capacity(message.len() + stamp.nonce.len() + 40);
    let _ = rmp::encode::write_array_len(&mut input, 4);
    let _ = rmp::encode::write_str(&mut input, STAMP_TAG);
    let _ = rmp::encode::write_uint(&mut input, stamp.timestamp_ms);
    let _ = rmp::encode::write_bin(&mut input, stamp.nonce);
    let _ = rmp::encode::write_bin(&mut input, message);
    mac(secret, &input)
}

/// The fields of an envelope, before any of them is checked.
#[derive(Default)]
struct Fields<'a> {
    signature: Option<&'a str>,
    data: Option<&'a [u8]>,
    timestamp: Option<u64>,
    nonce: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// The decoded signature and the data it covers.
    fn signed(&self) -> Result<(Vec<u8>, &'a [u8]), AuthError> {
        let signature = self.signature.ok_or(AuthError::MissingField(SIGN_KEY))?;
        let data = self.data.ok_or(AuthError::MissingField(DATA_KEY))?;
        let signature = hex::decode(signature).map_err(|_| AuthError::SignatureNotHex)?;
        Ok((signature, data))
    }
}

/// The `data` of an envelope, unchecked. Only for shaping the refusal of a
/// message that failed verification (e.g. to answer an RPC request by its
/// msgid), never for handling it.
pub fn unverified_data(frame: &[u8]) -> Option<&[u8]> {
    open(frame).ok()?.data
}

/// Splits an envelope into its fields; other keys are skipped so the
/// envelope can grow without breaking older readers.
fn open(frame: &[u8]) -> Result<Fields<'_>, AuthError> {
    let mut rest = frame;
    let entries = rmp::decode::read_map_len(&mut rest).map_err(|_| AuthError::NotAnEnvelope)?;
    let mut fields = Fields::default();
    for _ in 0..entries {
        let key = read_str(&mut rest);
        let value_end = value_len(rest).ok_or(AuthError::NotAnEnvelope)?;
        let (mut value, after) = rest.split_at(value_end);
        rest = after;
        match key {
            Some(SIGN_KEY) => {
                fields.signature =
                    Some(read_str(&mut value).ok_or(AuthError::MissingField(SIGN_KEY))?);
            }
            Some(DATA_KEY) => fields.data = Some(read_bin(value, DATA_KEY)?),
            Some(NONCE_KEY) => fields.nonce = Some(read_bin(value, NONCE_KEY)?),
            Some(TS_KEY) => {
                fields.timestamp = Some(
                    rmp::decode::read_int(&mut value)
                        .map_err(|_| AuthError::MissingField(TS_KEY))?,
                );
            }
            _ => {}
        }
    }
    Ok(fields)
}

/// The bytes of the MessagePack binary that is the whole of `value`.
fn read_bin<'a>(mut value: &'a [u8], key: &'static str) -> Result<&'a [u8], AuthError> {
    let len = rmp::decode::read_bin_len(&mut value).map_err(|_| AuthError::MissingField(key))?;
    value
        .get(..len as usize)
        .ok_or(AuthError::MissingField(key))
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

    /// What the Python arrpc package's
    /// `sign_and_wrap_msg(packb({"foo": "bar"}), "secret")` returns.
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
        // {"arrpc.sign": "zz", "data": bin(1)}: signature is not hex.
        let mut not_hex = vec![0x82, 0xaa];
        not_hex.extend(b"arrpc.sign");
        not_hex.extend([0xa2, b'z', b'z', 0xa4]);
        not_hex.extend(b"data");
        not_hex.extend([0xc4, 0x01, 0x05]);
        assert_eq!(verify(&not_hex, &[b"k"]), Err(AuthError::SignatureNotHex));
    }

    const STAMP: Stamp<'static> = Stamp {
        timestamp_ms: 1_700_000_000_123,
        nonce: b"0123456789abcdef",
    };

    #[test]
    fn stamped_envelopes_round_trip_and_cover_the_stamp() {
        let envelope = sign_stamped(b"k", &[0x07], STAMP);
        assert_eq!(
            verify_stamped(&envelope, &[&b"other"[..], b"k"]),
            Ok(Stamped {
                data: &[0x07],
                stamp: STAMP
            })
        );
        // Changing the timestamp or nonce breaks the MAC.
        let mut other_nonce = envelope.clone();
        let at = other_nonce
            .windows(16)
            .position(|w| w == STAMP.nonce)
            .unwrap();
        other_nonce[at] ^= 1;
        assert_eq!(
            verify_stamped(&other_nonce, &[b"k"]),
            Err(AuthError::BadSignature)
        );
        let mut later = envelope.clone();
        let ts = STAMP.timestamp_ms.to_be_bytes();
        let at = later.windows(8).position(|w| w == ts).unwrap();
        later[at + 7] ^= 1;
        assert_eq!(
            verify_stamped(&later, &[b"k"]),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn seed_and_stamped_envelopes_are_not_interchangeable() {
        let seed = sign(b"k", &[0x07]);
        assert_eq!(
            verify_stamped(&seed, &[b"k"]),
            Err(AuthError::MissingField(TS_KEY))
        );
        let stamped = sign_stamped(b"k", &[0x07], STAMP);
        assert_eq!(verify(&stamped, &[b"k"]), Err(AuthError::BadSignature));
    }
}
