//! Sealing one value into one record.
//!
//! Each record gets its own key, HKDF-SHA256(data key, info = format version
//! ‖ classification ‖ token), so GCM nonce limits are far away however many
//! records share a data key, and the associated data binds the ciphertext to
//! its record: a ciphertext copied into another record does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use super::provider::DataKey;
use super::random::Randomness;

/// The record layout version, bound into every record key and its AAD.
pub const FORMAT_VERSION: u8 = 1;

/// What a sealed value is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub token: &'a str,
    pub classification: &'a str,
    pub data_key_id: &'a str,
    pub format_version: u8,
}

impl Binding<'_> {
    fn hkdf_info(&self) -> Vec<u8> {
        let mut v = vec![self.format_version];
        push_field(&mut v, self.classification);
        push_field(&mut v, self.token);
        v
    }

    fn aad(&self) -> Vec<u8> {
        let mut v = vec![self.format_version];
        push_field(&mut v, self.token);
        push_field(&mut v, self.classification);
        push_field(&mut v, self.data_key_id);
        v
    }
}

fn push_field(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

/// A sealed value: all a record stores besides the data-key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Sealing or opening failed; says nothing of keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the record did not open: it was altered or moved")]
    Open,
    #[error("sealing failed")]
    Seal,
}

fn record_key(dk: &DataKey, b: &Binding<'_>) -> Result<LessSafeKey, EnvelopeError> {
    let k = dk.hkdf32(&b.hkdf_info());
    let key = UnboundKey::new(&AES_256_GCM, k.as_ref()).map_err(|_| EnvelopeError::Seal)?;
    Ok(LessSafeKey::new(key))
}

/// Seals `plaintext` under the record key derived for `b`, with a random
/// nonce.
pub fn seal(dk: &DataKey, b: &Binding<'_>, plaintext: &[u8]) -> Result<Sealed, EnvelopeError> {
    seal_with(dk, b, plaintext, &mut Randomness::for_records(1))
}

/// As [`seal`], taking the nonce from `rng` (one draw for a batch). A
/// record key usually seals one value, but not always: an attempt that
/// finds its token taken has sealed under the existing record's key, and a
/// preserving token can be issued again after its record is deleted. So
/// the nonce must stay random (96 bits from the DRBG), never a counter or
/// a constant.
pub fn seal_with(
    dk: &DataKey,
    b: &Binding<'_>,
    plaintext: &[u8],
    rng: &mut Randomness,
) -> Result<Sealed, EnvelopeError> {
    let key = record_key(dk, b)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce);
    // Room for the tag from the start: appending it to a full buffer moved
    // the plaintext and freed the old copy unwiped.
    let mut buf = Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len());
    buf.extend_from_slice(plaintext);
    let sealed = key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(b.aad()),
        &mut buf,
    );
    if sealed.is_err() {
        buf.zeroize();
        return Err(EnvelopeError::Seal);
    }
    Ok(Sealed {
        nonce: nonce.to_vec(),
        ciphertext: buf,
    })
}

/// Opens a sealed value; fails unless every bound field matches.
pub fn open(
    dk: &DataKey,
    b: &Binding<'_>,
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if nonce.len() != NONCE_LEN {
        return Err(EnvelopeError::Open);
    }
    let key = record_key(dk, b).map_err(|_| EnvelopeError::Open)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::Open)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(b.aad()), &mut buf)
        .map_err(|_| EnvelopeError::Open)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::aead::RandomizedNonceKey;
    use aws_lc_rs::hkdf::HKDF_SHA256;

    fn binding(token: &str) -> Binding<'_> {
        Binding {
            token,
            classification: "pan",
            data_key_id: "dk/pan/1",
            format_version: FORMAT_VERSION,
        }
    }

    /// Records sealed with aws-lc's HKDF must still open: the cached PRK
    /// and the single-block Expand give the key a full HKDF gives.
    #[test]
    fn the_cached_extract_derives_the_full_hkdf_key() {
        for seed in [0u8, 7, 255] {
            let bytes = [seed; 32];
            let dk = DataKey::from_bytes(bytes);
            let info = binding("tok_a").hkdf_info();
            let parts: [&[u8]; 1] = [&info];
            let mut want = [0u8; 32];
            aws_lc_rs::hkdf::Salt::new(HKDF_SHA256, &[])
                .extract(&bytes)
                .expand(&parts, HKDF_SHA256)
                .unwrap()
                .fill(&mut want)
                .unwrap();
            assert_eq!(*dk.hkdf32(&info), want);
        }
        // And a record sealed the old way opens the new way.
        let dk = DataKey::from_bytes([9u8; 32]);
        let b = binding("tok_a");
        let info = b.hkdf_info();
        let parts: [&[u8]; 1] = [&info];
        let mut k = [0u8; 32];
        aws_lc_rs::hkdf::Salt::new(HKDF_SHA256, &[])
            .extract(dk.expose())
            .expand(&parts, HKDF_SHA256)
            .unwrap()
            .fill(&mut k)
            .unwrap();
        let old = RandomizedNonceKey::new(&AES_256_GCM, &k).unwrap();
        let mut buf = b"4111111111111111".to_vec();
        let nonce = old
            .seal_in_place_append_tag(Aad::from(b.aad()), &mut buf)
            .unwrap();
        let opened = open(&dk, &b, nonce.as_ref(), &buf).unwrap();
        assert_eq!(&opened[..], b"4111111111111111");
    }

    /// Records sealed from one source take different nonces, and open.
    #[test]
    fn records_sealed_from_one_draw_take_their_own_nonces() {
        let dk = DataKey::from_bytes([7u8; 32]);
        let mut rng = Randomness::for_records(2);
        let a = seal_with(&dk, &binding("tok_a"), b"4111111111111111", &mut rng).unwrap();
        let b = seal_with(&dk, &binding("tok_b"), b"4111111111111111", &mut rng).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.nonce.len(), NONCE_LEN);
        for (t, s) in [("tok_a", &a), ("tok_b", &b)] {
            let p = open(&dk, &binding(t), &s.nonce, &s.ciphertext).unwrap();
            assert_eq!(&p[..], b"4111111111111111");
        }
    }

    /// No copy of the value is freed unwiped on the way to its ciphertext.
    #[test]
    fn sealing_leaves_no_copy_of_the_value_in_freed_memory() {
        let dk = DataKey::from_bytes([7u8; 32]);
        let value = Zeroizing::new(b"4111111111111111".to_vec());
        let left = crate::freed::left_behind(b"11111111", || {
            let s = seal(&dk, &binding("tok_a"), &value).unwrap();
            assert_eq!(s.ciphertext.len(), value.len() + 16);
        });
        assert!(!left, "a freed block still held the card's digits");
    }

    #[test]
    fn round_trips_and_refuses_a_moved_ciphertext() {
        let dk = DataKey::from_bytes([7u8; 32]);
        let s = seal(&dk, &binding("tok_a"), b"4111111111111111").unwrap();
        assert!(!s.ciphertext.windows(4).any(|w| w == b"4111"));
        let p = open(&dk, &binding("tok_a"), &s.nonce, &s.ciphertext).unwrap();
        assert_eq!(&p[..], b"4111111111111111");
        assert_eq!(
            open(&dk, &binding("tok_b"), &s.nonce, &s.ciphertext),
            Err(EnvelopeError::Open)
        );
        let other = Binding {
            data_key_id: "dk/pan/2",
            ..binding("tok_a")
        };
        assert_eq!(
            open(&dk, &other, &s.nonce, &s.ciphertext),
            Err(EnvelopeError::Open)
        );
    }
}
