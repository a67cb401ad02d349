//! The gossip keyring: one primary key that seals what we send, and every
//! listed key accepted on receive, so that a key can be rotated without a
//! moment where two speakers cannot read each other.
//!
//! Rotation (each step rolled out to every speaker before the next):
//! 1. add the new key to the keyring: everyone still sends with the old one
//!    and now also accepts the new one;
//! 2. make the new key primary and keep the old one listed: speakers that
//!    switched send with the new key, which every speaker accepts since step
//!    1, and still read the old key from those that have not switched yet;
//! 3. remove the old key: nobody sends with it since step 2.
//!
//! On disk (see [`KeyringFiles`]): the primary is `--memberlist-key-file`,
//! the other keys are the files of `--memberlist-keyring-dir` — with the
//! chart, the entries of the memberlist Secret mounted as a directory.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

use super::seal::{Key, KeyError};

/// Keys accepted at once. A rotation needs two; each extra key costs one
/// more decryption attempt for every datagram that fails authentication.
pub const MAX_KEYS: usize = 8;

/// The keys a speaker seals and opens with; the first is the primary.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({})", self.describe())
    }
}

/// Why a keyring cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot list gossip keyring directory {path}: {source}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("gossip keyring: {second} holds the same key as {first}; remove one of them")]
    Duplicate { first: PathBuf, second: PathBuf },
    #[error("gossip keyring: {0} keys, at most {MAX_KEYS} are accepted")]
    TooMany(usize),
}

impl Keyring {
    /// A keyring of one key, which is then primary.
    pub fn single(primary: Key) -> Self {
        Self {
            keys: vec![primary],
        }
    }

    /// `primary` seals, it and `accepted` open. Refuses a key listed twice
    /// (most often the old key pasted where the new one should be) and more
    /// than [`MAX_KEYS`] keys.
    pub fn new(primary: Key, accepted: impl IntoIterator<Item = Key>) -> Result<Self, String> {
        let mut keys = vec![primary];
        for (index, key) in accepted.into_iter().enumerate() {
            if let Some(same) = keys.iter().position(|known| *known == key) {
                return Err(format!(
                    "accepted key {} is the same as {}",
                    index + 1,
                    if same == 0 {
                        "the primary key".to_string()
                    } else {
                        format!("accepted key {same}")
                    }
                ));
            }
            keys.push(key);
        }
        if keys.len() > MAX_KEYS {
            return Err(format!("{} keys, at most {MAX_KEYS}", keys.len()));
        }
        Ok(Self { keys })
    }

    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// Every key, the primary first: the order datagrams are tried in.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// For logs: each key's fingerprint, the primary first and marked.
    pub fn describe(&self) -> String {
        let mut text = format!("primary {}", fingerprint(&self.keys[0]));
        for key in &self.keys[1..] {
            text.push_str(", accepted ");
            text.push_str(&fingerprint(key));
        }
        text
    }
}

/// A short public name for a key, to tell in logs which key each speaker
/// uses without printing it: the first 4 bytes of the Poly1305 tag the key
/// gives an empty message under an all-zero nonce, which reveals nothing
/// about the key (it is a MAC of public data) yet differs between keys.
pub fn fingerprint(key: &Key) -> String {
    let cipher = XChaCha20Poly1305::new(&key.bytes().into());
    let tag = cipher
        .encrypt_in_place_detached(&XNonce::default(), b"xdp-speaker key fingerprint", &mut [])
        .expect("an empty message always encrypts");
    tag[..4].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where a keyring is read from: `--memberlist-key-file` (the primary) and
/// `--memberlist-keyring-dir` (every other key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringFiles {
    pub primary: PathBuf,
    pub dir: Option<PathBuf>,
}

impl KeyringFiles {
    /// Reads the primary and every regular file of the directory, skipping
    /// names that start with a dot (a Kubernetes Secret volume keeps its
    /// `..data` link and timestamped directories there) and the primary key
    /// file itself when it lies in the directory.
    pub fn load(&self) -> Result<Keyring, KeyringError> {
        let primary = Key::from_file(&self.primary)?;
        let mut named = BTreeMap::new();
        if let Some(dir) = &self.dir {
            let list_error = |source| KeyringError::ListDir {
                path: dir.clone(),
                source,
            };
            let primary_path = std::fs::canonicalize(&self.primary).ok();
            for entry in std::fs::read_dir(dir).map_err(list_error)? {
                let path = entry.map_err(list_error)?.path();
                let hidden = path
                    .file_name()
                    .is_none_or(|name| name.to_string_lossy().starts_with('.'));
                // metadata follows symlinks: a Secret's entries are links.
                if hidden || !path.metadata().is_ok_and(|meta| meta.is_file()) {
                    continue;
                }
                if std::fs::canonicalize(&path).ok() == primary_path {
                    continue;
                }
                named.insert(path.clone(), Key::from_file(&path)?);
            }
        }
        // Checked here rather than left to `Keyring::new` so that the error
        // names both files.
        let mut seen: Vec<(&Path, &Key)> = vec![(&self.primary, &primary)];
        for (path, key) in &named {
            if let Some((first, _)) = seen.iter().find(|(_, known)| *known == key) {
                return Err(KeyringError::Duplicate {
                    first: first.to_path_buf(),
                    second: path.clone(),
                });
            }
            seen.push((path, key));
        }
        let count = 1 + named.len();
        Keyring::new(primary, named.into_values()).map_err(|_| KeyringError::TooMany(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key {
        Key::from_bytes([byte; 32])
    }

    fn hex(byte: u8) -> String {
        format!("{byte:02x}").repeat(32)
    }

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("gossip-keyring-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn primary_first_then_the_others() {
        let ring = Keyring::new(key(1), [key(2), key(3)]).unwrap();
        assert_eq!(ring.primary(), &key(1));
        assert_eq!(ring.keys(), &[key(1), key(2), key(3)]);
        assert_eq!(Keyring::single(key(9)).keys(), &[key(9)]);
    }

    #[test]
    fn duplicates_and_too_many_keys_are_refused() {
        assert_eq!(
            Keyring::new(key(1), [key(2), key(1)]).unwrap_err(),
            "accepted key 2 is the same as the primary key"
        );
        assert_eq!(
            Keyring::new(key(1), [key(2), key(2)]).unwrap_err(),
            "accepted key 2 is the same as accepted key 1"
        );
        let nine = Keyring::new(key(0), (1..=8).map(key));
        assert_eq!(nine.unwrap_err(), "9 keys, at most 8");
        assert!(Keyring::new(key(0), (1..=7).map(key)).is_ok());
    }

    #[test]
    fn fingerprints_differ_and_hide_the_key() {
        let one = fingerprint(&key(1));
        assert_eq!(one.len(), 8);
        assert_eq!(one, fingerprint(&key(1)));
        assert_ne!(one, fingerprint(&key(2)));
        assert!(!hex(1).contains(&one));
        let ring = Keyring::new(key(1), [key(2)]).unwrap();
        assert_eq!(
            format!("{ring:?}"),
            format!("Keyring(primary {one}, accepted {})", fingerprint(&key(2)))
        );
    }

    #[test]
    fn a_secret_volume_directory_is_read_as_the_keyring() {
        let dir = Dir::new("volume");
        // What the kubelet writes for a Secret volume: real files under a
        // timestamped directory, `..data` pointing at it, one link per entry.
        let data = dir.0.join("..2026_11_30_07_40_00.000");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("secretkey"), hex(2)).unwrap();
        std::fs::write(data.join("secretkey-old"), hex(1)).unwrap();
        std::os::unix::fs::symlink(data.file_name().unwrap(), dir.0.join("..data")).unwrap();
        for name in ["secretkey", "secretkey-old"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.0.join(name)).unwrap();
        }
        let files = KeyringFiles {
            primary: dir.0.join("secretkey"),
            dir: Some(dir.0.clone()),
        };
        let ring = files.load().unwrap();
        assert_eq!(ring.keys(), &[key(2), key(1)]);

        let without_dir = KeyringFiles {
            dir: None,
            ..files.clone()
        };
        assert_eq!(without_dir.load().unwrap().keys(), &[key(2)]);
    }

    #[test]
    fn bad_directories_name_the_file() {
        let dir = Dir::new("bad");
        let primary = dir.write("secretkey", &hex(1));
        let files = KeyringFiles {
            primary,
            dir: Some(dir.0.clone()),
        };
        let pasted = dir.write("secretkey-new", &format!("{}\n", hex(1)));
        let message = files.load().unwrap_err().to_string();
        assert!(
            message.contains("secretkey-new holds the same key as")
                && message.ends_with("secretkey; remove one of them"),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1);

        std::fs::write(&pasted, "short").unwrap();
        let message = files.load().unwrap_err().to_string();
        assert!(message.contains("secretkey-new"), "{message}");
        assert_eq!(message.lines().count(), 1);

        std::fs::write(&pasted, hex(2)).unwrap();
        for extra in 3..=9 {
            dir.write(&format!("secretkey-{extra}"), &hex(extra));
        }
        let message = files.load().unwrap_err().to_string();
        assert_eq!(message, "gossip keyring: 9 keys, at most 8 are accepted");

        let missing = KeyringFiles {
            dir: Some(dir.0.join("absent")),
            ..files
        };
        let message = missing.load().unwrap_err().to_string();
        assert!(
            message.starts_with("cannot list gossip keyring directory"),
            "{message}"
        );
    }

    /// The rotation on the sans-IO cores: each speaker restarted in turn
    /// with the next step's keyring.
    mod rotation {
        use std::time::Duration;

        use super::*;
        use crate::membership::{SimulatedLan, Timers};

        const SECOND: Duration = Duration::from_secs(1);

        fn lan_with(keyring: &Keyring) -> SimulatedLan {
            let mut lan = SimulatedLan::new(Timers::fast_lan());
            for _ in 0..3 {
                let index = lan.add_speaker(None);
                lan.speaker_mut(index).set_keyring(Some(keyring));
            }
            for index in 0..3 {
                lan.join(index, &[0, 1, 2]);
            }
            lan.run_until(10 * SECOND, SimulatedLan::converged)
                .expect("three speakers with one key meet");
            lan
        }

        fn restart_with(lan: &mut SimulatedLan, index: usize, generation: u32, keyring: &Keyring) {
            lan.crash(index);
            lan.run_for(SECOND / 10);
            lan.start(index, generation, None);
            lan.speaker_mut(index).set_keyring(Some(keyring));
            lan.join(index, &[0, 1, 2]);
        }

        fn auth_failures(lan: &SimulatedLan) -> u64 {
            (0..3).map(|i| lan.speaker(i).stats().auth_failures).sum()
        }

        #[test]
        fn every_step_restarted_speaker_by_speaker_keeps_one_cluster() {
            let (old, new) = (key(0x10), key(0x20));
            let steps = [
                Keyring::new(old.clone(), [new.clone()]).unwrap(),
                Keyring::new(new.clone(), [old.clone()]).unwrap(),
                Keyring::single(new.clone()),
            ];
            let mut lan = lan_with(&Keyring::single(old.clone()));
            let mut generation = 1;
            let mut secondary = 0;
            for (step, keyring) in steps.iter().enumerate() {
                generation += 1;
                for index in 0..3 {
                    restart_with(&mut lan, index, generation, keyring);
                    lan.run_until(10 * SECOND, SimulatedLan::converged)
                        .unwrap_or_else(|| panic!("step {} speaker {index}: split", step + 1));
                    // Not one datagram failed: nobody ever had to guess.
                    assert_eq!(auth_failures(&lan), 0, "step {} speaker {index}", step + 1);
                }
                lan.run_for(2 * SECOND);
                assert!(lan.converged(), "step {}", step + 1);
                secondary += (0..3)
                    .map(|i| lan.speaker(i).stats().opened_by_secondary_key)
                    .sum::<u64>();
            }
            // Steps 1 and 2 mix primaries: the second key did open datagrams.
            assert!(secondary > 0);
            // After step 3 only the new key is in use.
            let after: u64 = (0..3)
                .map(|i| lan.speaker(i).stats().opened_by_secondary_key)
                .sum();
            assert_eq!(after, 0);
        }

        #[test]
        fn skipping_the_overlap_splits() {
            let (old, new) = (key(0x10), key(0x20));
            let mut lan = lan_with(&Keyring::single(old));
            restart_with(&mut lan, 0, 2, &Keyring::single(new));
            lan.run_for(5 * SECOND);
            assert!(!lan.converged());
            assert!(auth_failures(&lan) > 0);
        }

        #[test]
        fn a_replayed_datagram_is_counted_and_not_an_authentication_failure() {
            let mut lan = lan_with(&Keyring::single(key(0x10)));
            let (from0, to1) = (SimulatedLan::addr(0), SimulatedLan::addr(1));
            let mut captured = None;
            lan.run_watching(SECOND, |from, datagram| {
                if from == from0 && datagram.to == to1 && captured.is_none() {
                    captured = Some(datagram.bytes.to_vec());
                }
            });
            let datagram = captured.expect("node-0 talked to node-1");
            let before = lan.speaker(1).stats();
            // Once as sent, once from another source address.
            lan.inject(from0, to1, datagram.clone());
            lan.inject(SimulatedLan::addr(2), to1, datagram);
            lan.run_for(SECOND / 100);
            let after = lan.speaker(1).stats();
            assert_eq!(after.replayed - before.replayed, 2);
            assert_eq!(after.auth_failures, before.auth_failures);
            assert!(!lan.speaker(1).key_mismatch(lan.now()));
            assert!(lan.converged());
        }

        #[test]
        fn format_1_from_a_known_speaker_is_counted_apart() {
            let mut lan = lan_with(&Keyring::single(key(0x10)));
            let (from0, to1) = (SimulatedLan::addr(0), SimulatedLan::addr(1));
            let mut old_format = vec![0x01];
            old_format.extend_from_slice(&[0xAB; 40]);
            lan.inject(from0, to1, old_format);
            lan.run_for(SECOND / 100);
            let stats = lan.speaker(1).stats();
            assert_eq!((stats.old_format, stats.auth_failures), (1, 1));
        }
    }
}
