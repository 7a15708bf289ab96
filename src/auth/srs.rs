//! The Sender Rewriting Scheme (SRS), as libsrs2 and postsrsd write it, so that a message
//! forwarded to an outside address keeps passing the next hop's SPF check: the envelope
//! sender becomes an address of the forwarding domain that carries the original one, a
//! day stamp and a keyed hash, so bounces come back here, are checked and go on to the
//! original sender, and nobody else can make the relay send mail to an address of their
//! choosing.
//!
//! - `SRS0=HHHH=TT=example.org=alice@forwarder.example`: `HHHH` is the first four base64
//!   characters of HMAC-SHA1(secret, lowercase(TT `=` domain `=` local)), `TT` the day
//!   (days since 1970, mod 1024) in two base32 characters.
//! - An `SRS0` address forwarded again becomes `SRS1=HHHH=first.example==HHHH=TT=...`: the
//!   hash covers the first forwarder and the rest, so the chain does not grow per hop.
//!
//! The addresses have libsrs2's shape, but the hash is not libsrs2's: libsrs2 hashes the
//! fields run together (`TT` + `example.org` + `alice`), so `mbob@victim.co`'s address,
//! edited to read `victim.com` and `bob`, keeps its hash and reverses to `bob@victim.com`:
//! whoever sees one forwarded copy could have bounces relayed to a shifted address for 21
//! days. Here each field ends with `=`, which no domain holds, so every boundary is signed.
//! The price: addresses postsrsd made with the same secret are not reversed after a switch
//! (they expire within `srs-max-age` anyway).
//!
//! Pure: the day is passed in, nothing is read or written. Several secrets can be given:
//! the first makes new addresses, all are accepted (so a secret can be rotated).

use base64::Engine;
use ring::hmac;

/// Days an `SRS0` address stays valid (libsrs2's and postsrsd's default is 21).
pub const DEFAULT_MAX_AGE_DAYS: u32 = 21;

const TIME_CHARS: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Days wrap around after 32 * 32: the stamp says which day within the last 1024.
const TIME_SLOTS: u64 = 1024;
const HASH_LEN: usize = 4;

/// Secrets and the age limit; build it once per rule set.
pub struct Srs {
    keys: Vec<hmac::Key>,
    max_age_days: u32,
}

impl std::fmt::Debug for Srs {
    // The secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srs")
            .field("secrets", &self.keys.len())
            .field("max_age_days", &self.max_age_days)
            .finish()
    }
}

/// Why an address that looks like SRS is not accepted as one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    /// Not an SRS address at all: the caller treats it as any other address.
    #[error("not an SRS address")]
    NotSrs,
    /// SRS-shaped, but its fields are missing or malformed.
    #[error("malformed SRS address")]
    Malformed,
    /// The hash does not match any secret: forged, or made by another forwarder.
    #[error("SRS hash does not match")]
    BadHash,
    /// The day stamp is older than the age limit (or from the future).
    #[error("SRS address expired")]
    Expired,
}

impl Srs {
    /// `secrets` must not be empty; the first one makes new addresses.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S], max_age_days: u32) -> Option<Srs> {
        let keys: Vec<hmac::Key> = secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, s.as_ref()))
            .collect();
        (!keys.is_empty()).then_some(Srs { keys, max_age_days })
    }

    /// The envelope sender for `sender` (`local@domain`) forwarded by `alias_domain` on
    /// `day` (days since 1970). The null sender and an address without `@` stay as they are
    /// (`None`): there is nothing to return mail to.
    pub fn forward(&self, sender: &str, alias_domain: &str, day: u64) -> Option<String> {
        let (local, domain) = sender.rsplit_once('@')?;
        if local.is_empty() || domain.is_empty() {
            return None;
        }
        let local_part = if let Some(rest) = tagged(local, "SRS0") {
            // Forwarded again: SRS1 names the first forwarder and keeps its SRS0 as it is.
            let hash = self.hash(0, &[domain, rest]);
            format!("SRS1={hash}={domain}={rest}")
        } else if let Some(rest) = tagged(local, "SRS1") {
            // Forwarded a third time: re-sign the same first forwarder and original.
            let (_, first, srs0) = split_srs1(rest).ok()?;
            let hash = self.hash(0, &[first, srs0]);
            format!("SRS1={hash}={first}={srs0}")
        } else {
            let stamp = stamp(day);
            let hash = self.hash(0, &[&stamp, domain, local]);
            format!("SRS0={hash}={stamp}={domain}={local}")
        };
        Some(format!("{local_part}@{alias_domain}"))
    }

    /// Where a bounce to `address` (one of ours, any case) goes: the original sender for
    /// `SRS0`, the first forwarder's `SRS0` address for `SRS1`. Checked against every secret
    /// and, for `SRS0`, the age limit on `day`.
    pub fn reverse(&self, address: &str, day: u64) -> Result<String, SrsError> {
        let (local, _) = address.rsplit_once('@').ok_or(SrsError::NotSrs)?;
        if let Some(rest) = tagged(local, "SRS0") {
            // HHHH=TT=domain=local: the original local part may itself hold '='.
            let mut parts = rest.get(1..).ok_or(SrsError::Malformed)?.splitn(4, '=');
            let (Some(hash), Some(stamp), Some(domain), Some(orig)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(SrsError::Malformed);
            };
            if domain.is_empty() || orig.is_empty() || stamp.len() != 2 {
                return Err(SrsError::Malformed);
            }
            self.check(hash, &[stamp, domain, orig])?;
            self.check_age(stamp, day)?;
            Ok(format!("{orig}@{domain}"))
        } else if let Some(rest) = tagged(local, "SRS1") {
            let (hash, first, srs0) = split_srs1(rest)?;
            self.check(hash, &[first, srs0])?;
            Ok(format!("SRS0{srs0}@{first}"))
        } else {
            Err(SrsError::NotSrs)
        }
    }

    fn hash(&self, key: usize, parts: &[&str]) -> String {
        let Some(key) = self.keys.get(key) else {
            return String::new();
        };
        let mut ctx = hmac::Context::with_key(key);
        for (i, p) in parts.iter().enumerate() {
            // Each boundary signed (the module's doc says why); a domain never holds `=`, so
            // the split of the signed text is the address's own.
            if i > 0 {
                ctx.update(b"=");
            }
            // Case-insensitive, as libsrs2: the next hop may change the case of a local part.
            ctx.update(p.to_ascii_lowercase().as_bytes());
        }
        let tag = ctx.sign();
        let mut b64 = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        b64.truncate(HASH_LEN);
        b64
    }

    fn check(&self, hash: &str, parts: &[&str]) -> Result<(), SrsError> {
        if hash.len() != HASH_LEN {
            return Err(SrsError::Malformed);
        }
        // Exact first; a next hop that lowercased the address still matches, as libsrs2
        // allows, at the cost of a few bits of the 24.
        let ok = (0..self.keys.len()).any(|k| {
            let h = self.hash(k, parts);
            h == hash || h.eq_ignore_ascii_case(hash)
        });
        if ok { Ok(()) } else { Err(SrsError::BadHash) }
    }

    fn check_age(&self, stamp: &str, day: u64) -> Result<(), SrsError> {
        let then = unstamp(stamp).ok_or(SrsError::Malformed)?;
        let today = day % TIME_SLOTS;
        let age = (today + TIME_SLOTS - then) % TIME_SLOTS;
        if age <= u64::from(self.max_age_days) {
            Ok(())
        } else {
            Err(SrsError::Expired)
        }
    }
}

/// The rest of a local part after `SRS0` or `SRS1` and a separator (`=`, `-` or `+`, any
/// case), the separator included, as the hash of an `SRS1` covers it.
fn tagged<'a>(local: &'a str, tag: &str) -> Option<&'a str> {
    let head = local.get(..4)?;
    let rest = local.get(4..)?;
    (head.eq_ignore_ascii_case(tag) && rest.starts_with(['=', '-', '+'])).then_some(rest)
}

/// `=HHHH=first.example==HHHH=TT=...` (the rest after `SRS1`) into its hash, first
/// forwarder and the first forwarder's SRS0 rest (from its separator on).
fn split_srs1(rest: &str) -> Result<(&str, &str, &str), SrsError> {
    let body = rest.get(1..).ok_or(SrsError::Malformed)?;
    let (hash, after) = body.split_once('=').ok_or(SrsError::Malformed)?;
    // The first forwarder ends at the next '='; what follows is its SRS0 rest, from that
    // rest's own separator on (so `==` for the usual `=`).
    let (first, _) = after.split_once('=').ok_or(SrsError::Malformed)?;
    let srs0 = after.get(first.len() + 1..).ok_or(SrsError::Malformed)?;
    if first.is_empty() || !srs0.starts_with(['=', '-', '+']) || srs0.len() < 2 {
        return Err(SrsError::Malformed);
    }
    Ok((hash, first, srs0))
}

fn stamp(day: u64) -> String {
    let t = day % TIME_SLOTS;
    let hi = TIME_CHARS.get((t >> 5) as usize).copied().unwrap_or(b'A');
    let lo = TIME_CHARS.get((t & 31) as usize).copied().unwrap_or(b'A');
    String::from_utf8_lossy(&[hi, lo]).into_owned()
}

fn unstamp(stamp: &str) -> Option<u64> {
    let digit = |c: u8| {
        TIME_CHARS
            .iter()
            .position(|&t| t == c.to_ascii_uppercase())
            .map(|p| p as u64)
    };
    let b = stamp.as_bytes();
    Some(digit(*b.first()?)? << 5 | digit(*b.get(1)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 20_429; // 2025-12-07

    fn srs() -> Srs {
        Srs::new(&["s3cret"], DEFAULT_MAX_AGE_DAYS).unwrap()
    }

    #[test]
    fn srs0_round_trips() {
        let s = srs();
        let f = s.forward("alice@example.org", "fwd.example", DAY).unwrap();
        assert!(f.starts_with("SRS0="), "{f}");
        assert!(f.ends_with("=example.org=alice@fwd.example"), "{f}");
        assert_eq!(s.reverse(&f, DAY).unwrap(), "alice@example.org");
        // The next hop may lowercase it.
        assert_eq!(
            s.reverse(&f.to_ascii_lowercase(), DAY + 3).unwrap(),
            "alice@example.org"
        );
    }

    #[test]
    fn a_local_part_with_separators_survives() {
        let s = srs();
        let f = s
            .forward("a=b+c-d@example.org", "fwd.example", DAY)
            .unwrap();
        assert_eq!(s.reverse(&f, DAY).unwrap(), "a=b+c-d@example.org");
    }

    #[test]
    fn forged_and_expired_addresses_are_refused() {
        let s = srs();
        let f = s.forward("alice@example.org", "fwd.example", DAY).unwrap();
        let victim = f.replace("alice", "victim");
        assert_eq!(s.reverse(&victim, DAY), Err(SrsError::BadHash));
        assert_eq!(
            s.reverse(&f, DAY + u64::from(DEFAULT_MAX_AGE_DAYS) + 1),
            Err(SrsError::Expired)
        );
        let other = Srs::new(&["another"], 21).unwrap();
        assert_eq!(other.reverse(&f, DAY), Err(SrsError::BadHash));
        assert_eq!(
            s.reverse("SRS0=abcd=AA=example.org@fwd.example", DAY),
            Err(SrsError::Malformed)
        );
        assert_eq!(s.reverse("alice@fwd.example", DAY), Err(SrsError::NotSrs));
        assert_eq!(
            s.reverse("SRS0=@fwd.example", DAY),
            Err(SrsError::Malformed)
        );
    }

    #[test]
    fn a_rotated_secret_still_reverses_old_addresses() {
        let old = Srs::new(&["old"], 21).unwrap();
        let f = old
            .forward("alice@example.org", "fwd.example", DAY)
            .unwrap();
        let new = Srs::new(&["new", "old"], 21).unwrap();
        assert_eq!(new.reverse(&f, DAY).unwrap(), "alice@example.org");
        let g = new
            .forward("alice@example.org", "fwd.example", DAY)
            .unwrap();
        assert_ne!(f, g);
        assert_eq!(old.reverse(&g, DAY), Err(SrsError::BadHash));
    }

    #[test]
    fn forwarded_twice_becomes_srs1_and_unwinds_in_two_steps() {
        let first = Srs::new(&["first"], 21).unwrap();
        let second = Srs::new(&["second"], 21).unwrap();
        let a = first
            .forward("alice@example.org", "one.example", DAY)
            .unwrap();
        let b = second.forward(&a, "two.example", DAY).unwrap();
        assert!(b.starts_with("SRS1="), "{b}");
        assert!(
            b.contains("=one.example==") || b.contains("=one.example=-"),
            "{b}"
        );
        // A third forward keeps it SRS1, signed by the third.
        let third = Srs::new(&["third"], 21).unwrap();
        let c = third.forward(&b, "three.example", DAY).unwrap();
        assert!(
            c.starts_with("SRS1=") && c.ends_with("@three.example"),
            "{c}"
        );
        assert_eq!(third.reverse(&c, DAY).unwrap(), a);
        // The bounce goes back to the first forwarder, which reverses its SRS0.
        let back = second.reverse(&b, DAY).unwrap();
        assert_eq!(back, a);
        assert_eq!(first.reverse(&back, DAY).unwrap(), "alice@example.org");
        assert_eq!(first.reverse(&b, DAY), Err(SrsError::BadHash));
    }

    #[test]
    fn day_stamps_wrap_and_future_stamps_are_refused() {
        let s = srs();
        // 1023 -> 0: one day old across the wrap.
        let f = s.forward("a@example.org", "fwd.example", 1023).unwrap();
        assert_eq!(s.reverse(&f, 1024).unwrap(), "a@example.org");
        // A stamp from tomorrow reads as 1023 days old.
        let g = s.forward("a@example.org", "fwd.example", DAY + 1).unwrap();
        assert_eq!(s.reverse(&g, DAY), Err(SrsError::Expired));
    }

    #[test]
    fn the_null_sender_is_not_rewritten() {
        let s = srs();
        assert_eq!(s.forward("", "fwd.example", DAY), None);
        assert_eq!(s.forward("nobody", "fwd.example", DAY), None);
        assert!(Srs::new::<&str>(&[], 21).is_none());
    }

    /// The shape of an independent implementation's addresses (pysrs 1.0.3, Stuart
    /// Gathman's port of Shevek's Mail::SRS, libsrs2's format): `Guarded(secret='s3cret')
    /// .forward('alice@example.org', 'fwd.example')` on 2026-12-07 (day 20794, stamp `J2`)
    /// gives `SRS0=cnam=J2=example.org=alice@fwd.example`, forwarded again by two.example
    /// with `Guarded(secret='second')` `SRS1=y6HI=fwd.example==cnam=J2=...`. Everything but
    /// the hash is the same here; the hashes differ on purpose (each boundary is signed: the
    /// module's doc), and are pinned by Python's own HMAC:
    /// `b64(hmac(b's3cret', b'j2=example.org=alice', sha1))[:4]` is `//Gt`.
    #[test]
    fn addresses_have_pysrs_shape_with_every_boundary_signed() {
        let day = 20_794;
        let a = srs()
            .forward("alice@example.org", "fwd.example", day)
            .unwrap();
        assert_eq!(a, "SRS0=//Gt=J2=example.org=alice@fwd.example");
        assert_ne!(
            a, "SRS0=cnam=J2=example.org=alice@fwd.example",
            "libsrs2's hash"
        );
        let second = Srs::new(&["second"], 21).unwrap();
        let b = second.forward(&a, "two.example", day).unwrap();
        assert_eq!(
            b,
            "SRS1=RGhM=fwd.example==//Gt=J2=example.org=alice@two.example"
        );
        assert_eq!(second.reverse(&b, day).unwrap(), a);
    }

    /// The hash, spelled out: HMAC-SHA1 over the lowercased stamp, domain and local part,
    /// each boundary marked with `=`, base64, four characters.
    #[test]
    fn the_hash_signs_each_field_and_its_boundary() {
        let s = srs();
        let f = s.forward("Alice@Example.org", "fwd.example", DAY).unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"s3cret");
        let stamp = stamp(DAY);
        let tag = hmac::sign(
            &key,
            format!("{}=example.org=alice", stamp.to_ascii_lowercase()).as_bytes(),
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        assert_eq!(
            f,
            format!("SRS0={}={stamp}=Example.org=Alice@fwd.example", &b64[..4])
        );
    }

    /// libsrs2's weakness: `mbob@victim.co` and `bob@victim.com` run together the same.
    /// Moving the boundary in an address made for one must not reverse to the other.
    #[test]
    fn a_shifted_boundary_between_domain_and_local_part_is_forged() {
        let s = srs();
        let made = s.forward("mbob@victim.co", "fwd.example", DAY).unwrap();
        let shifted = made.replace("=victim.co=mbob@", "=victim.com=bob@");
        assert_ne!(made, shifted);
        assert_eq!(s.reverse(&shifted, DAY), Err(SrsError::BadHash));
    }
}
