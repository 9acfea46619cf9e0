//! TLS 1.3 session tickets every worker of a master can open.
//!
//! rustls's default keeps resumable sessions in a cache of the process that made them: behind a
//! shared socket a returning client reaches any worker, so with N workers N-1 of N resumptions
//! missed and became full handshakes (a signature for the server, a verification for the
//! client). Instead, a worker seals each session into the ticket it sends (ChaCha20-Poly1305,
//! as rustls's own ticketer), under a key every worker derives alike: HKDF-SHA256 of the
//! private key, salted with a random value the master draws at its start and passes to its
//! workers (`PREFORK_TLS_TICKET_SALT`; the salt alone opens nothing), and of the current
//! six-hour period. Keys change every period (a ticket opens in its period and the next); a new
//! master (a restart) draws a new salt, so its tickets and the old ones do not mix.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf::{Prk, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// How long one ticket key is used for sealing.
const PERIOD: Duration = Duration::from_secs(6 * 3600);

/// The salt's length in bytes.
const SALT_LEN: usize = 32;

/// A new random salt, hex-encoded for the workers' environment (`None` if the system has no
/// randomness to give: the workers then keep rustls's per-process session cache).
pub(crate) fn new_salt() -> Option<String> {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new().fill(&mut salt).ok()?;
    Some(salt.iter().map(|b| format!("{b:02x}")).collect())
}

/// Parses a salt from [`new_salt`].
fn parse_salt(hex: &str) -> Option<[u8; SALT_LEN]> {
    let mut salt = [0u8; SALT_LEN];
    if hex.len() != SALT_LEN * 2 {
        return None;
    }
    for (i, byte) in salt.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(salt)
}

/// Seals sessions into tickets that every worker of the same master opens.
pub(crate) struct SharedTicketer {
    prk: Prk,
    rng: SystemRandom,
}

impl std::fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTicketer").finish_non_exhaustive()
    }
}

impl SharedTicketer {
    /// The ticketer of the workers of the master that drew `salt_hex`, for the private key
    /// `secret`; `None` if the salt is malformed.
    pub(crate) fn new(salt_hex: &str, secret: &[u8]) -> Option<SharedTicketer> {
        let salt = parse_salt(salt_hex)?;
        Some(SharedTicketer {
            prk: ring::hkdf::Salt::new(HKDF_SHA256, &salt).extract(secret),
            rng: SystemRandom::new(),
        })
    }

    fn period_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / PERIOD.as_secs())
    }

    /// The sealing key of `period`.
    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let period = period.to_be_bytes();
        let info = [b"prefork tls ticket key".as_slice(), &period];
        let okm = self.prk.expand(&info, &CHACHA20_POLY1305).ok()?;
        let mut key = [0u8; 32];
        okm.fill(&mut key).ok()?;
        Some(LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &key).ok()?,
        ))
    }

    fn seal(&self, period: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.key(period)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(8 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&out[..8]),
            &mut sealed,
        )
        .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn open(&self, now: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        let (period, rest) = ticket.split_first_chunk::<8>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let period_n = u64::from_be_bytes(*period);
        if period_n != now && period_n.checked_add(1) != Some(now) {
            return None;
        }
        let key = self.key(period_n)?;
        let mut data = sealed.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(&period[..]),
                &mut data,
            )
            .ok()?;
        let len = plain.len();
        data.truncate(len);
        Some(data)
    }
}

impl rustls::server::ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(Self::period_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(Self::period_now(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_of_one_master_open_each_others_tickets_and_no_one_else_does() {
        let salt = new_salt().unwrap();
        let a = SharedTicketer::new(&salt, b"the private key").unwrap();
        let b = SharedTicketer::new(&salt, b"the private key").unwrap();
        let sealed = a.seal(100, b"session").unwrap();
        assert_eq!(b.open(100, &sealed).as_deref(), Some(&b"session"[..]));
        assert_eq!(
            b.open(101, &sealed).as_deref(),
            Some(&b"session"[..]),
            "next period"
        );
        assert_eq!(b.open(102, &sealed), None, "expired");
        let other_master = SharedTicketer::new(&new_salt().unwrap(), b"the private key").unwrap();
        assert_eq!(other_master.open(100, &sealed), None);
        let other_key = SharedTicketer::new(&salt, b"another key").unwrap();
        assert_eq!(other_key.open(100, &sealed), None);
        let mut forged = sealed.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(b.open(100, &forged), None);
        assert_eq!(b.open(100, &sealed[..10]), None);
        assert_ne!(
            a.seal(100, b"session"),
            Some(sealed),
            "a fresh nonce per ticket"
        );
        assert!(SharedTicketer::new("not hex", b"k").is_none());
    }
}
