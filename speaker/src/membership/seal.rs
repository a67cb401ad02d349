//! Authenticated encryption of every gossip datagram, and the shared key.
//!
//! One datagram is one foca packet behind a one-byte kind:
//!
//! ```text
//! plaintext: [0x00] [foca packet]
//! sealed:    [0x01] [nonce: 12 bytes] [ChaCha20-Poly1305 ciphertext] [tag: 16 bytes]
//! ```
//!
//! The kind byte is the associated data, so it cannot be flipped without
//! failing authentication. Nonces are 96 random bits per datagram (from
//! `rand`'s OS-seeded ChaCha generator): with one shared key and many senders
//! a counter cannot be kept unique, and random nonces stay below the 2^-32
//! collision bound for 2^32 datagrams per key — about 13 years of a 100-node
//! cluster at 10 datagrams per node per second.
//!
//! A speaker with a key accepts only sealed datagrams that authenticate under
//! that key; a speaker without a key accepts only plaintext. Everything else is
//! dropped and counted as an authentication failure, so a speaker with no key
//! or another key can neither join nor inject members.
//!
//! Like memberlist's encryption there is no replay window: a captured datagram
//! can be sent again. Replays of a departed identity are ignored because a Down
//! member cannot come back with the same identity (until foca forgets it after
//! `Timers::remove_down_after`), and a restarted speaker's newer generation
//! always wins over its old identity.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bytes::{BufMut as _, Bytes, BytesMut};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use rand::Rng as _;

/// Offsets in a datagram, named once.
mod field {
    use std::ops::{Range, RangeFrom};

    pub const KIND: usize = 0;
    pub const PLAINTEXT_PAYLOAD: RangeFrom<usize> = 1..;
    pub const NONCE: Range<usize> = 1..13;
    /// Ciphertext followed by the tag.
    pub const SEALED_PAYLOAD: RangeFrom<usize> = 13..;
}

const KIND_PLAINTEXT: u8 = 0x00;
const KIND_SEALED: u8 = 0x01;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Bytes a sealed datagram adds to the foca packet (kind, nonce, tag).
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// The 32-byte key shared by every speaker of a cluster.
///
/// The key file (a Kubernetes Secret mounted as a file holds the decoded
/// value of its data entry) may contain, checked in this order:
///
/// 1. exactly 32 bytes: the raw key (`head -c 32 /dev/urandom`);
/// 2. 64 hexadecimal characters, either case (`openssl rand -hex 32`);
/// 3. base64 of 32 bytes, standard or URL-safe alphabet, padding optional
///    (`openssl rand -base64 32`, 44 characters).
///
/// Surrounding whitespace (a trailing newline from `echo` or an editor) is
/// ignored for the text forms. Anything else is refused rather than hashed
/// into a key, so that a truncated or mistyped key is an error at start-up and
/// not a silent partition.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read gossip key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("gossip key file {path}: {reason}")]
    Format {
        path: PathBuf,
        #[source]
        reason: KeyFormatError,
    },
}

/// Why key material is not one of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key is empty; expected {ACCEPTED_FORMS}")]
    Empty,
    #[error("{0} bytes that are neither hexadecimal nor base64; expected {ACCEPTED_FORMS}")]
    NotText(usize),
    #[error(
        "{chars} characters of base64 decode to {bytes} bytes, not 32; expected {ACCEPTED_FORMS}"
    )]
    WrongDecodedLength { chars: usize, bytes: usize },
    #[error("{0} characters that are neither 64 hexadecimal characters nor base64; expected {ACCEPTED_FORMS}")]
    Unrecognised(usize),
}

const ACCEPTED_FORMS: &str = "32 raw bytes, 64 hexadecimal characters (openssl rand -hex 32) \
     or base64 of 32 bytes (openssl rand -base64 32)";

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads and parses a key file; see [`Key`] for the accepted forms.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Key, KeyError> {
        let path = path.as_ref();
        let contents = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Key::parse(&contents).map_err(|reason| KeyError::Format {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses key material in one of the forms listed on [`Key`].
    pub fn parse(contents: &[u8]) -> Result<Key, KeyFormatError> {
        if let Ok(raw) = <[u8; KEY_LEN]>::try_from(contents) {
            return Ok(Key(raw));
        }
        let text = contents.trim_ascii();
        if text.is_empty() {
            return Err(KeyFormatError::Empty);
        }
        if !text.is_ascii() {
            return Err(KeyFormatError::NotText(contents.len()));
        }
        if text.len() == 2 * KEY_LEN {
            if let Some(key) = decode_hex(text) {
                return Ok(Key(key));
            }
        }
        match decode_base64(text) {
            Some(bytes) => <[u8; KEY_LEN]>::try_from(bytes.as_slice())
                .map(Key)
                .map_err(|_| KeyFormatError::WrongDecodedLength {
                    chars: text.len(),
                    bytes: bytes.len(),
                }),
            None => Err(KeyFormatError::Unrecognised(text.len())),
        }
    }
}

fn decode_hex(text: &[u8]) -> Option<[u8; KEY_LEN]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(key)
}

/// RFC 4648 base64, both alphabets (section 4 and the URL-safe section 5),
/// with or without `=` padding; line breaks inside are skipped because
/// `base64` wraps long output.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' | b'-' => Some(62),
            b'/' | b'_' => Some(63),
            _ => None,
        }
    }
    let symbols: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let unpadded = symbols
        .strip_suffix(b"==")
        .unwrap_or_else(|| symbols.strip_suffix(b"=").unwrap_or(&symbols));
    // A single leftover symbol carries only 6 bits: not a whole byte.
    if unpadded.len() % 4 == 1 {
        return None;
    }
    let mut bytes = Vec::with_capacity(unpadded.len() * 3 / 4);
    for group in unpadded.chunks(4) {
        let mut bits = 0u32;
        for &c in group {
            bits = (bits << 6) | sextet(c)?;
        }
        bits <<= 6 * (4 - group.len() as u32);
        let whole = &bits.to_be_bytes()[1..];
        bytes.extend_from_slice(&whole[..group.len() - 1]);
    }
    Some(bytes)
}

/// Why a received datagram was dropped before reaching foca.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("empty datagram")]
    Empty,
    #[error("unknown datagram kind {0:#04x}")]
    UnknownKind(u8),
    #[error("plaintext datagram, but a gossip key is configured")]
    PlaintextRefused,
    #[error("sealed datagram, but no gossip key is configured")]
    SealedWithoutKey,
    #[error("sealed datagram shorter than nonce and tag")]
    Truncated,
    #[error("sealed datagram fails authentication (another key, or tampered)")]
    Forged,
}

/// Seals outgoing and opens incoming datagrams with an optional key.
pub struct PacketSeal {
    cipher: Option<ChaCha20Poly1305>,
}

impl PacketSeal {
    pub fn new(key: Option<&Key>) -> Self {
        Self {
            cipher: key.map(|key| ChaCha20Poly1305::new(&key.0.into())),
        }
    }

    pub fn is_keyed(&self) -> bool {
        self.cipher.is_some()
    }

    /// Bytes this seal adds to every packet.
    pub fn overhead(&self) -> usize {
        if self.is_keyed() {
            SEAL_OVERHEAD
        } else {
            1
        }
    }

    /// The datagram for one foca packet, built in one buffer of its final
    /// size and encrypted in place there.
    pub fn seal(&self, packet: &[u8]) -> Bytes {
        let mut datagram = BytesMut::with_capacity(packet.len() + self.overhead());
        let Some(cipher) = &self.cipher else {
            datagram.put_u8(KIND_PLAINTEXT);
            datagram.put_slice(packet);
            return datagram.freeze();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        datagram.put_u8(KIND_SEALED);
        datagram.put_slice(&nonce);
        datagram.put_slice(packet);
        let (kind, rest) = datagram.split_at_mut(field::KIND + 1);
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), kind, &mut rest[NONCE_LEN..])
            .expect("ChaCha20-Poly1305 encrypts up to 256 GiB per message");
        datagram.put_slice(&tag);
        datagram.freeze()
    }

    /// Authenticates `datagram` and leaves the foca packet in `packet`.
    pub fn open(&self, datagram: &[u8], packet: &mut Vec<u8>) -> Result<(), OpenError> {
        packet.clear();
        let kind = *datagram.get(field::KIND).ok_or(OpenError::Empty)?;
        match (kind, &self.cipher) {
            (KIND_PLAINTEXT, None) => {
                packet.extend_from_slice(&datagram[field::PLAINTEXT_PAYLOAD]);
                Ok(())
            }
            (KIND_PLAINTEXT, Some(_)) => Err(OpenError::PlaintextRefused),
            (KIND_SEALED, None) => Err(OpenError::SealedWithoutKey),
            (KIND_SEALED, Some(cipher)) => {
                if datagram.len() < SEAL_OVERHEAD {
                    return Err(OpenError::Truncated);
                }
                let nonce = Nonce::from_slice(&datagram[field::NONCE]);
                let sealed = &datagram[field::SEALED_PAYLOAD];
                let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
                packet.extend_from_slice(ciphertext);
                let opened = cipher.decrypt_in_place_detached(
                    nonce,
                    &datagram[..=field::KIND],
                    packet,
                    Tag::from_slice(tag),
                );
                opened.map_err(|_| {
                    packet.clear();
                    OpenError::Forged
                })
            }
            (other, _) => Err(OpenError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    // base64 of the bytes 0..32.
    const BASE64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn counting_key() -> Key {
        Key(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn key_forms_a_mounted_secret_can_hold() {
        let want = counting_key();
        assert_eq!(Key::parse(HEX.as_bytes()), Ok(want.clone()));
        assert_eq!(
            Key::parse(format!("{}\n", HEX.to_uppercase()).as_bytes()),
            Ok(want.clone())
        );
        assert_eq!(Key::parse(BASE64.as_bytes()), Ok(want.clone()));
        assert_eq!(
            Key::parse(format!("{BASE64}\n").as_bytes()),
            Ok(want.clone())
        );
        assert_eq!(
            Key::parse(BASE64.trim_end_matches('=').as_bytes()),
            Ok(want.clone())
        );
        let raw: Vec<u8> = (0..32).collect();
        assert_eq!(Key::parse(&raw), Ok(want));
    }

    #[test]
    fn raw_key_is_taken_verbatim_even_when_it_ends_in_whitespace() {
        let mut raw = [0xA5u8; 32];
        raw[0] = b' ';
        raw[31] = b'\n';
        assert_eq!(Key::parse(&raw), Ok(Key(raw)));
    }

    #[test]
    fn url_safe_base64_is_accepted() {
        let bytes = [0xFBu8; 32];
        // 0xFB 0xFB 0xFB = 111110 111111 101111 111011 → "-_v7" in RFC 4648 §5.
        let text = format!("{}-_s", "-_v7".repeat(10));
        assert_eq!(Key::parse(text.as_bytes()), Ok(Key(bytes)));
    }

    #[test]
    fn malformed_keys_say_what_was_found() {
        assert_eq!(Key::parse(b""), Err(KeyFormatError::Empty));
        assert_eq!(Key::parse(b" \n"), Err(KeyFormatError::Empty));
        assert_eq!(
            Key::parse(&HEX.as_bytes()[..62]),
            Err(KeyFormatError::WrongDecodedLength {
                chars: 62,
                bytes: 46
            })
        );
        assert_eq!(
            Key::parse(format!("{}zz", &HEX[..62]).as_bytes()),
            Err(KeyFormatError::WrongDecodedLength {
                chars: 64,
                bytes: 48
            })
        );
        assert_eq!(
            Key::parse(b"not a key!"),
            Err(KeyFormatError::Unrecognised(10))
        );
        assert_eq!(Key::parse(&[0xFFu8; 20]), Err(KeyFormatError::NotText(20)));
        // MetalLB's documented `openssl rand -base64 128` secret is too long.
        let metallb = "QUJD".repeat(43);
        assert_eq!(
            Key::parse(metallb.as_bytes()),
            Err(KeyFormatError::WrongDecodedLength {
                chars: 172,
                bytes: 129
            })
        );
        let message = KeyFormatError::Empty.to_string();
        assert!(message.contains("openssl rand -hex 32"), "{message}");
    }

    #[test]
    fn key_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("gossip-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, format!("{HEX}\n")).unwrap();
        assert_eq!(Key::from_file(&good).unwrap(), counting_key());

        let bad = dir.join("bad");
        std::fs::write(&bad, "short").unwrap();
        let err = Key::from_file(&bad).unwrap_err();
        assert!(matches!(err, KeyError::Format { .. }));
        assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");

        let missing = dir.join("missing");
        let err = Key::from_file(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }));
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_does_not_print_the_key() {
        assert_eq!(format!("{:?}", counting_key()), "Key(<redacted>)");
    }

    #[test]
    fn sealed_round_trip() {
        let seal = PacketSeal::new(Some(&counting_key()));
        let datagram = seal.seal(b"hello foca");
        assert_eq!(datagram.len(), 10 + SEAL_OVERHEAD);
        assert_eq!(datagram[field::KIND], KIND_SEALED);
        assert!(!datagram.windows(5).any(|w| w == b"hello"));
        let mut packet = Vec::new();
        seal.open(&datagram, &mut packet).unwrap();
        assert_eq!(packet, b"hello foca");
    }

    #[test]
    fn nonces_differ_per_datagram() {
        let seal = PacketSeal::new(Some(&counting_key()));
        let a = seal.seal(b"same");
        let b = seal.seal(b"same");
        assert_ne!(a[field::NONCE], b[field::NONCE]);
        assert_ne!(a, b);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let seal = PacketSeal::new(Some(&counting_key()));
        let datagram = seal.seal(b"ping");
        let mut packet = Vec::new();
        for byte in 0..datagram.len() {
            for bit in 0..8 {
                let mut tampered = datagram.to_vec();
                tampered[byte] ^= 1 << bit;
                let opened = seal.open(&tampered, &mut packet);
                assert!(opened.is_err(), "byte {byte} bit {bit} accepted");
                assert!(packet.is_empty());
            }
        }
    }

    #[test]
    fn other_key_truncation_and_kinds_are_rejected() {
        let ours = PacketSeal::new(Some(&counting_key()));
        let theirs = PacketSeal::new(Some(&Key([7; 32])));
        let plaintext = PacketSeal::new(None);
        let mut packet = Vec::new();

        let sealed_by_them = theirs.seal(b"join me");
        assert_eq!(
            ours.open(&sealed_by_them, &mut packet),
            Err(OpenError::Forged)
        );
        assert_eq!(
            ours.open(&plaintext.seal(b"join me"), &mut packet),
            Err(OpenError::PlaintextRefused)
        );
        assert_eq!(
            plaintext.open(&sealed_by_them, &mut packet),
            Err(OpenError::SealedWithoutKey)
        );
        assert_eq!(
            ours.open(&sealed_by_them[..20], &mut packet),
            Err(OpenError::Truncated)
        );
        assert_eq!(ours.open(&[], &mut packet), Err(OpenError::Empty));
        assert_eq!(
            ours.open(&[0x02, 1, 2], &mut packet),
            Err(OpenError::UnknownKind(0x02))
        );

        // An empty foca packet still carries nonce and tag.
        let empty = ours.seal(b"");
        assert_eq!(empty.len(), SEAL_OVERHEAD);
        ours.open(&empty, &mut packet).unwrap();
        assert!(packet.is_empty());
    }

    #[test]
    fn plaintext_round_trip() {
        let seal = PacketSeal::new(None);
        let datagram = seal.seal(b"hi");
        assert_eq!(datagram, &[KIND_PLAINTEXT, b'h', b'i'][..]);
        let mut packet = Vec::new();
        seal.open(&datagram, &mut packet).unwrap();
        assert_eq!(packet, b"hi");
    }
}
