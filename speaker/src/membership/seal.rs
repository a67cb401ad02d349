//! Authenticated encryption of every gossip datagram, and the shared keys.
//!
//! One datagram is one foca packet behind a one-byte format:
//!
//! ```text
//! plaintext:  [0x00] [foca packet]
//! sealed v1:  [0x01] [nonce: 12] [ChaCha20-Poly1305 ciphertext] [tag: 16]   (refused)
//! sealed v2:  [0x02] [nonce: 24] [XChaCha20-Poly1305 ciphertext of
//!             sender: 18 | epoch: 8 | counter: 8 | foca packet] [tag: 16]
//! ```
//!
//! The format byte is the associated data, so it cannot be flipped without
//! failing authentication. Version 2 uses XChaCha20-Poly1305 with 192 random
//! bits of nonce per datagram: with one shared key and many senders a counter
//! cannot be kept unique across speakers, and 96 random bits (version 1)
//! reach the 2^-32 collision bound after 2^32 datagrams per key, which a large
//! cluster that never rotates its key could reach; 192 bits never do.
//!
//! Inside the authenticated payload, the sender's advertised gossip address,
//! its epoch and a counter feed the replay window ([`super::replay`]): a
//! captured datagram sent again is refused, and counted as `replayed`. The
//! sender is taken from the payload, not from the source address, so that a
//! replay with another source address still lands in the right window.
//!
//! A speaker with a keyring ([`Keyring`]) seals with its primary key and
//! opens with any of its keys, the primary first; a speaker without one
//! accepts only plaintext. Everything else is dropped and counted as an
//! authentication failure, so a speaker with no key or another key can
//! neither join nor inject members. A version 1 datagram (a speaker from
//! before version 2, during an upgrade) is refused with its own reason,
//! [`OpenError::OldFormat`], so the split of a mixed cluster says why.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut as _, Bytes, BytesMut};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use rand::Rng as _;

use super::keyring::Keyring;
use super::replay::{Replay, ReplayGuard};

/// Offsets shared by every format, named once.
mod field {
    use std::ops::RangeFrom;

    pub const KIND: usize = 0;
    pub const PLAINTEXT_PAYLOAD: RangeFrom<usize> = 1..;
}

const KIND_PLAINTEXT: u8 = 0x00;
/// ChaCha20-Poly1305 with 96-bit nonces, no replay header: recognised only
/// to be refused clearly.
const KIND_SEALED_V1: u8 = 0x01;
const KIND_SEALED_V2: u8 = 0x02;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Bytes a sealed datagram adds to the foca packet (format, nonce, sealed
/// header, tag).
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + v2::HEADER_LEN + TAG_LEN;

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

    pub(super) fn bytes(&self) -> [u8; KEY_LEN] {
        self.0
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
    #[error("unknown datagram format {0:#04x}")]
    UnknownKind(u8),
    #[error(
        "sealed datagram of format 1 (ChaCha20-Poly1305, speakers before the keyring): \
         this speaker only reads format 2; upgrade every speaker"
    )]
    OldFormat,
    #[error("plaintext datagram, but a gossip key is configured")]
    PlaintextRefused,
    #[error("sealed datagram, but no gossip key is configured")]
    SealedWithoutKey,
    #[error("sealed datagram shorter than nonce, header and tag")]
    Truncated,
    #[error("sealed datagram fails authentication under every key (another key, or tampered)")]
    Forged,
    #[error("replayed datagram: {0}")]
    Replayed(Replay),
}

/// What opened an accepted datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Plaintext,
    /// Index into [`Keyring::keys`]: 0 is the primary.
    Key(usize),
}

/// Offsets in a version 2 datagram and in its sealed header, named once.
mod v2 {
    use std::ops::{Range, RangeFrom};

    pub const NONCE: Range<usize> = 1..25;
    /// Ciphertext followed by the tag.
    pub const SEALED: RangeFrom<usize> = 25..;

    /// Inside the ciphertext: IPv6 (IPv4 as mapped) address, port.
    pub const SENDER_IP: Range<usize> = 0..16;
    pub const SENDER_PORT: Range<usize> = 16..18;
    pub const EPOCH: Range<usize> = 18..26;
    pub const COUNTER: Range<usize> = 26..34;
    pub const PACKET: RangeFrom<usize> = 34..;
    pub const HEADER_LEN: usize = 34;
}

/// Seals outgoing and opens incoming datagrams with an optional keyring,
/// and keeps this speaker's epoch and counter and the replay window.
pub struct PacketSeal {
    /// Ciphers for [`Keyring::keys`], the primary first.
    ciphers: Vec<XChaCha20Poly1305>,
    sender: SocketAddr,
    epoch: u64,
    counter: u64,
    replays: ReplayGuard,
}

impl PacketSeal {
    /// A seal for the speaker advertising `sender`, starting a new epoch.
    pub fn new(keyring: Option<&Keyring>, sender: SocketAddr) -> Self {
        let mut seal = Self {
            ciphers: Vec::new(),
            sender,
            epoch: new_epoch(),
            counter: 0,
            replays: ReplayGuard::default(),
        };
        seal.set_keyring(keyring);
        seal
    }

    /// Seals and opens with `keyring` from now on; the epoch, counter and
    /// replay window carry on.
    pub fn set_keyring(&mut self, keyring: Option<&Keyring>) {
        self.ciphers = keyring.map_or_else(Vec::new, |ring| {
            ring.keys()
                .iter()
                .map(|key| XChaCha20Poly1305::new(&key.bytes().into()))
                .collect()
        });
    }

    pub fn is_keyed(&self) -> bool {
        !self.ciphers.is_empty()
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
    pub fn seal(&mut self, packet: &[u8]) -> Bytes {
        let mut datagram = BytesMut::with_capacity(packet.len() + self.overhead());
        let Some(primary) = self.ciphers.first() else {
            datagram.put_u8(KIND_PLAINTEXT);
            datagram.put_slice(packet);
            return datagram.freeze();
        };
        self.counter += 1;
        let mut nonce = XNonce::default();
        rand::rng().fill_bytes(&mut nonce);
        datagram.put_u8(KIND_SEALED_V2);
        datagram.put_slice(&nonce);
        let sender_ip = match self.sender.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        datagram.put_slice(&sender_ip.octets());
        datagram.put_u16(self.sender.port());
        datagram.put_u64(self.epoch);
        datagram.put_u64(self.counter);
        datagram.put_slice(packet);
        let (kind, rest) = datagram.split_at_mut(field::KIND + 1);
        let tag = primary
            .encrypt_in_place_detached(&nonce, kind, &mut rest[NONCE_LEN..])
            .expect("XChaCha20-Poly1305 encrypts up to 256 GiB per message");
        datagram.put_slice(&tag);
        datagram.freeze()
    }

    /// Authenticates `datagram`, checks it against the replay window at
    /// `now`, and leaves the foca packet in `packet`.
    pub fn open(
        &mut self,
        now: Duration,
        datagram: &[u8],
        packet: &mut Vec<u8>,
    ) -> Result<Opened, OpenError> {
        packet.clear();
        let kind = *datagram.get(field::KIND).ok_or(OpenError::Empty)?;
        match (kind, self.is_keyed()) {
            (KIND_PLAINTEXT, false) => {
                packet.extend_from_slice(&datagram[field::PLAINTEXT_PAYLOAD]);
                Ok(Opened::Plaintext)
            }
            (KIND_PLAINTEXT, true) => Err(OpenError::PlaintextRefused),
            (KIND_SEALED_V1, _) => Err(OpenError::OldFormat),
            (KIND_SEALED_V2, false) => Err(OpenError::SealedWithoutKey),
            (KIND_SEALED_V2, true) => {
                let opened = self.decrypt(datagram, packet);
                let (key, sender, epoch, counter) = opened.inspect_err(|_| packet.clear())?;
                if let Err(replay) = self.replays.accept(sender, epoch, counter, now) {
                    packet.clear();
                    return Err(OpenError::Replayed(replay));
                }
                packet.drain(..v2::HEADER_LEN);
                Ok(Opened::Key(key))
            }
            (other, _) => Err(OpenError::UnknownKind(other)),
        }
    }

    /// Decrypts a version 2 datagram into `packet` (header included) with
    /// the first key that authenticates it.
    fn decrypt(
        &self,
        datagram: &[u8],
        packet: &mut Vec<u8>,
    ) -> Result<(usize, SocketAddr, u64, u64), OpenError> {
        if datagram.len() < SEAL_OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let nonce = XNonce::from_slice(&datagram[v2::NONCE]);
        let sealed = &datagram[v2::SEALED];
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        packet.extend_from_slice(ciphertext);
        // A failed attempt leaves the buffer as it was (the tag is checked
        // before anything is decrypted), so the next key sees the ciphertext.
        let key = self
            .ciphers
            .iter()
            .position(|cipher| {
                cipher
                    .decrypt_in_place_detached(
                        nonce,
                        &datagram[..=field::KIND],
                        packet,
                        Tag::from_slice(tag),
                    )
                    .is_ok()
            })
            .ok_or(OpenError::Forged)?;
        let ip: [u8; 16] = packet[v2::SENDER_IP].try_into().expect("16 bytes");
        let port: [u8; 2] = packet[v2::SENDER_PORT].try_into().expect("2 bytes");
        let sender = SocketAddr::new(Ipv6Addr::from(ip).to_canonical(), u16::from_be_bytes(port));
        let epoch = u64::from_be_bytes(packet[v2::EPOCH].try_into().expect("8 bytes"));
        let counter = u64::from_be_bytes(packet[v2::COUNTER].try_into().expect("8 bytes"));
        debug_assert_eq!(v2::PACKET.start, v2::HEADER_LEN);
        Ok((key, sender, epoch, counter))
    }
}

/// A new epoch for this process: the wall-clock microsecond, and always
/// above the previous epoch of this process (two seals created within one
/// microsecond, e.g. a restart in a simulation, still differ).
fn new_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        });
    let mut epoch = now;
    let _ = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        epoch = now.max(last + 1);
        Some(epoch)
    });
    epoch
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

    const SENDER: &str = "192.0.2.11:7946";
    const NOW: Duration = Duration::from_secs(5);

    fn sender() -> SocketAddr {
        SENDER.parse().unwrap()
    }

    fn sealer(keys: &[Key]) -> PacketSeal {
        let ring = Keyring::new(keys[0].clone(), keys[1..].iter().cloned()).unwrap();
        PacketSeal::new(Some(&ring), sender())
    }

    /// A sealer of its own speaker, `n` in 192.0.2.100 + n.
    fn speaker(n: u8, keys: &[Key]) -> PacketSeal {
        let mut seal = sealer(keys);
        seal.sender = SocketAddr::new([192, 0, 2, 100 + n].into(), 7946);
        seal
    }

    fn receiver(keys: &[Key]) -> PacketSeal {
        let ring = Keyring::new(keys[0].clone(), keys[1..].iter().cloned()).unwrap();
        PacketSeal::new(Some(&ring), "192.0.2.12:7946".parse().unwrap())
    }

    fn old_key() -> Key {
        Key([7; 32])
    }

    #[test]
    fn sealed_round_trip() {
        let mut seal = sealer(&[counting_key()]);
        let datagram = seal.seal(b"hello foca");
        assert_eq!(datagram.len(), 10 + SEAL_OVERHEAD);
        assert_eq!(datagram[field::KIND], KIND_SEALED_V2);
        assert!(!datagram.windows(5).any(|w| w == b"hello"));
        let mut packet = Vec::new();
        let mut other = receiver(&[counting_key()]);
        assert_eq!(other.open(NOW, &datagram, &mut packet), Ok(Opened::Key(0)));
        assert_eq!(packet, b"hello foca");
    }

    #[test]
    fn nonces_are_192_random_bits_per_datagram() {
        let mut seal = sealer(&[counting_key()]);
        let a = seal.seal(b"same");
        let b = seal.seal(b"same");
        assert_eq!(v2::NONCE.len(), 24);
        assert_ne!(a[v2::NONCE], b[v2::NONCE]);
        assert_ne!(a, b);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let mut seal = sealer(&[counting_key()]);
        let datagram = seal.seal(b"ping");
        let mut other = receiver(&[counting_key()]);
        let mut packet = Vec::new();
        for byte in 0..datagram.len() {
            for bit in 0..8 {
                let mut tampered = datagram.to_vec();
                tampered[byte] ^= 1 << bit;
                let opened = other.open(NOW, &tampered, &mut packet);
                assert!(opened.is_err(), "byte {byte} bit {bit} accepted");
                assert!(packet.is_empty());
            }
        }
        // Forgeries did not move the window: the genuine one still opens.
        assert_eq!(other.open(NOW, &datagram, &mut packet), Ok(Opened::Key(0)));
    }

    #[test]
    fn the_keyring_seals_with_the_primary_and_opens_with_any_key() {
        let new_key = counting_key();
        let mut packet = Vec::new();
        // Step 1: the new key is accepted, the old one still primary.
        let mut step1 = speaker(1, &[old_key(), new_key.clone()]);
        // Step 2: the new key is primary, the old one still accepted.
        let mut step2 = speaker(2, &[new_key.clone(), old_key()]);
        let mut not_rotated = speaker(3, &[old_key()]);
        let mut rotated = speaker(4, std::slice::from_ref(&new_key));

        let mut step1_receiver = receiver(&[old_key(), new_key.clone()]);
        let mut step2_receiver = receiver(&[new_key.clone(), old_key()]);
        let mut old_only = receiver(&[old_key()]);
        let mut new_only = receiver(std::slice::from_ref(&new_key));

        // Whatever step two speakers are at, as long as they are at most one
        // step apart, each opens what the other seals.
        let by_step1 = step1.seal(b"a");
        assert_eq!(
            old_only.open(NOW, &by_step1, &mut packet),
            Ok(Opened::Key(0))
        );
        assert_eq!(
            step2_receiver.open(NOW, &by_step1, &mut packet),
            Ok(Opened::Key(1))
        );
        assert_eq!(
            step1_receiver.open(NOW, &not_rotated.seal(b"b"), &mut packet),
            Ok(Opened::Key(0))
        );
        let by_step2 = step2.seal(b"c");
        assert_eq!(
            step1_receiver.open(NOW, &by_step2, &mut packet),
            Ok(Opened::Key(1))
        );
        assert_eq!(
            new_only.open(NOW, &by_step2, &mut packet),
            Ok(Opened::Key(0))
        );
        assert_eq!(
            step2_receiver.open(NOW, &rotated.seal(b"d"), &mut packet),
            Ok(Opened::Key(0))
        );
        assert_eq!(packet, b"d");

        // Two steps apart is a split: that is why each step is rolled out
        // everywhere before the next.
        assert_eq!(
            new_only.open(NOW, &not_rotated.seal(b"e"), &mut packet),
            Err(OpenError::Forged)
        );
        assert_eq!(
            old_only.open(NOW, &rotated.seal(b"f"), &mut packet),
            Err(OpenError::Forged)
        );
    }

    #[test]
    fn a_new_keyring_keeps_the_counter_and_the_replay_window() {
        let mut seal = sealer(&[old_key()]);
        let mut other = receiver(&[old_key(), counting_key()]);
        let mut packet = Vec::new();
        let first = seal.seal(b"1");
        other.open(NOW, &first, &mut packet).unwrap();
        seal.set_keyring(Some(&Keyring::new(counting_key(), [old_key()]).unwrap()));
        other.set_keyring(Some(&Keyring::single(counting_key())));
        assert_eq!(
            other.open(NOW, &seal.seal(b"2"), &mut packet),
            Ok(Opened::Key(0))
        );
        assert_eq!(
            other.open(NOW, &first, &mut packet),
            Err(OpenError::Forged),
            "the old key is gone"
        );
        other.set_keyring(Some(&Keyring::new(counting_key(), [old_key()]).unwrap()));
        assert_eq!(
            other.open(NOW, &first, &mut packet),
            Err(OpenError::Replayed(Replay::Duplicate))
        );
    }

    #[test]
    fn replays_are_refused_after_authentication() {
        let mut seal = sealer(&[counting_key()]);
        let mut other = receiver(&[counting_key()]);
        let mut packet = Vec::new();
        let first = seal.seal(b"first");
        let second = seal.seal(b"second");
        // Out of order within the window: both accepted, each once.
        assert!(other.open(NOW, &second, &mut packet).is_ok());
        assert!(other.open(NOW, &first, &mut packet).is_ok());
        assert_eq!(packet, b"first");
        for again in [&first, &second] {
            assert_eq!(
                other.open(NOW, again, &mut packet),
                Err(OpenError::Replayed(Replay::Duplicate))
            );
            assert!(packet.is_empty());
        }
        // Too old: 64 newer datagrams push the first out of the window.
        let early = seal.seal(b"early");
        for _ in 0..64 {
            other.open(NOW, &seal.seal(b"x"), &mut packet).unwrap();
        }
        assert_eq!(
            other.open(NOW, &early, &mut packet),
            Err(OpenError::Replayed(Replay::TooOld))
        );
    }

    #[test]
    fn a_restarted_sender_is_a_new_epoch_not_a_replay() {
        let mut other = receiver(&[counting_key()]);
        let mut packet = Vec::new();
        let mut before = sealer(&[counting_key()]);
        let old = before.seal(b"old");
        other.open(NOW, &old, &mut packet).unwrap();
        other
            .open(NOW, &before.seal(b"old 2"), &mut packet)
            .unwrap();
        // Same address, new process: its counter starts at 1 again.
        let mut after = sealer(&[counting_key()]);
        assert!(after.epoch > before.epoch);
        assert_eq!(
            other.open(NOW, &after.seal(b"new"), &mut packet),
            Ok(Opened::Key(0))
        );
        assert_eq!(
            other.open(NOW, &before.seal(b"from the old process"), &mut packet),
            Err(OpenError::Replayed(Replay::StaleEpoch))
        );
    }

    #[test]
    fn the_sender_inside_the_payload_decides_the_window_not_the_source() {
        // Two senders with the same epoch and counter do not collide.
        let mut other = receiver(&[counting_key()]);
        let mut packet = Vec::new();
        let mut a = sealer(&[counting_key()]);
        let mut b = PacketSeal::new(
            Some(&Keyring::single(counting_key())),
            "[2001:db8::13]:7946".parse().unwrap(),
        );
        b.epoch = a.epoch;
        other.open(NOW, &a.seal(b"a"), &mut packet).unwrap();
        other.open(NOW, &b.seal(b"b"), &mut packet).unwrap();
        assert_eq!(other.replays.senders(), 2);
    }

    #[test]
    fn format_1_datagrams_are_refused_by_name() {
        // A version 1 datagram as speakers before the keyring sealed them.
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&counting_key().0.into());
        let nonce = [3u8; 12];
        let mut body = b"ping".to_vec();
        let tag = cipher
            .encrypt_in_place_detached((&nonce).into(), &[KIND_SEALED_V1], &mut body)
            .unwrap();
        let mut datagram = vec![KIND_SEALED_V1];
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(&body);
        datagram.extend_from_slice(&tag);
        let mut other = receiver(&[counting_key()]);
        let mut packet = Vec::new();
        let refused = other.open(NOW, &datagram, &mut packet).unwrap_err();
        assert_eq!(refused, OpenError::OldFormat);
        assert!(refused.to_string().contains("upgrade every speaker"));
    }

    #[test]
    fn other_key_truncation_and_kinds_are_rejected() {
        let mut ours = receiver(&[counting_key()]);
        let mut theirs = sealer(&[Key([7; 32])]);
        let mut plaintext = PacketSeal::new(None, sender());
        let mut packet = Vec::new();

        let sealed_by_them = theirs.seal(b"join me");
        assert_eq!(
            ours.open(NOW, &sealed_by_them, &mut packet),
            Err(OpenError::Forged)
        );
        assert_eq!(
            ours.open(NOW, &plaintext.seal(b"join me"), &mut packet),
            Err(OpenError::PlaintextRefused)
        );
        assert_eq!(
            plaintext.open(NOW, &sealed_by_them, &mut packet),
            Err(OpenError::SealedWithoutKey)
        );
        assert_eq!(
            ours.open(NOW, &sealed_by_them[..SEAL_OVERHEAD - 1], &mut packet),
            Err(OpenError::Truncated)
        );
        assert_eq!(ours.open(NOW, &[], &mut packet), Err(OpenError::Empty));
        assert_eq!(
            ours.open(NOW, &[0x03, 1, 2], &mut packet),
            Err(OpenError::UnknownKind(0x03))
        );

        // An empty foca packet still carries nonce, header and tag.
        let mut seal = sealer(&[counting_key()]);
        let empty = seal.seal(b"");
        assert_eq!(empty.len(), SEAL_OVERHEAD);
        ours.open(NOW, &empty, &mut packet).unwrap();
        assert!(packet.is_empty());
    }

    #[test]
    fn plaintext_round_trip() {
        let mut seal = PacketSeal::new(None, sender());
        let datagram = seal.seal(b"hi");
        assert_eq!(datagram, &[KIND_PLAINTEXT, b'h', b'i'][..]);
        let mut packet = Vec::new();
        assert_eq!(
            seal.open(NOW, &datagram, &mut packet),
            Ok(Opened::Plaintext)
        );
        assert_eq!(packet, b"hi");
        // Plaintext has no header, hence no replay window: with no key
        // anyone can inject anyway.
        assert_eq!(
            seal.open(NOW, &datagram, &mut packet),
            Ok(Opened::Plaintext)
        );
    }
}
