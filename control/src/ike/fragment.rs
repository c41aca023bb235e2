//! Sealing messages into SK or SKF payloads (RFC 7383 fragmentation when
//! the peer supports it and the message is too big), and reassembly.

use crate::crypto::{CryptoError, Random, SkCipher};
use crate::wire::consts::payload as pt;
use crate::wire::{IkeHeader, HEADER_LEN};

/// The most fragments accepted for one message; bounds reassembly memory.
const MAX_FRAGMENTS: u16 = 32;
/// The most decrypted bytes one IKE SA holds for a message being
/// reassembled: a certificate chain in IKE_AUTH fits many times over
/// (strongSwan's whole-message limit, `max_packet`, is 10000 bytes).
pub(crate) const MAX_REASSEMBLED: usize = 64 * 1024;

/// Seals `inner` (the emitted inner payloads, first one of type `first`)
/// into one datagram, or several SKF fragments when `fragment_size` is
/// given and the single datagram would exceed it.
pub(crate) fn seal(
    mut header: IkeHeader,
    first: u8,
    inner: &[u8],
    cipher: &mut SkCipher,
    fragment_size: Option<usize>,
    rng: &mut dyn Random,
) -> Result<Vec<Vec<u8>>, CryptoError> {
    let whole = HEADER_LEN + 4 + cipher.sealed_len(inner.len());
    let chunk = match fragment_size {
        Some(size) if whole > size => cipher.max_plain_len(size.saturating_sub(HEADER_LEN + 8)),
        _ => {
            header.next_payload = pt::SK;
            header.length = u32::try_from(whole).map_err(|_| CryptoError::BadLength(whole))?;
            let mut out = Vec::with_capacity(whole);
            header.emit(&mut out);
            let sk_len =
                u16::try_from(whole - HEADER_LEN).map_err(|_| CryptoError::BadLength(whole))?;
            out.push(first);
            out.push(0);
            out.extend_from_slice(&sk_len.to_be_bytes());
            cipher.seal(&mut out, inner, rng)?;
            return Ok(vec![out]);
        }
    };
    if chunk == 0 {
        return Err(CryptoError::BadLength(whole));
    }
    let parts: Vec<&[u8]> = inner.chunks(chunk).collect();
    let total = u16::try_from(parts.len()).map_err(|_| CryptoError::BadLength(whole))?;
    let mut out = Vec::with_capacity(parts.len());
    for (n, part) in parts.iter().enumerate() {
        let number = u16::try_from(n + 1).map_err(|_| CryptoError::BadLength(whole))?;
        let len = HEADER_LEN + 8 + cipher.sealed_len(part.len());
        header.next_payload = pt::SKF;
        header.length = u32::try_from(len).map_err(|_| CryptoError::BadLength(len))?;
        let mut msg = Vec::with_capacity(len);
        header.emit(&mut msg);
        // Only the first fragment names the first inner payload (section 2.5).
        msg.push(if number == 1 { first } else { 0 });
        msg.push(0);
        let skf_len = u16::try_from(len - HEADER_LEN).map_err(|_| CryptoError::BadLength(len))?;
        msg.extend_from_slice(&skf_len.to_be_bytes());
        msg.extend_from_slice(&number.to_be_bytes());
        msg.extend_from_slice(&total.to_be_bytes());
        cipher.seal(&mut msg, part, rng)?;
        out.push(msg);
    }
    Ok(out)
}

/// Fragments of one message being collected.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    message_id: u32,
    total: u16,
    first: u8,
    parts: Vec<Option<Vec<u8>>>,
    /// Bytes in `parts`.
    held: usize,
}

/// What adding a fragment gave.
pub(crate) enum Reassembled {
    /// More fragments are needed.
    Incomplete,
    /// The whole inner payload chain and its first payload type.
    Complete { first: u8, inner: Vec<u8> },
    /// The fragment was invalid (number out of range, too many fragments).
    Invalid,
    /// Holding it would pass the bytes allowed: the message is dropped.
    OverBudget,
}

impl Reassembly {
    /// Bytes held for the message being reassembled.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Adds a decrypted fragment, holding at most `budget` bytes for the
    /// message; past it, what was held is let go.
    pub(crate) fn add(
        &mut self,
        message_id: u32,
        number: u16,
        total: u16,
        first: u8,
        plain: Vec<u8>,
        budget: usize,
    ) -> Reassembled {
        if total == 0 || total > MAX_FRAGMENTS || number == 0 || number > total {
            return Reassembled::Invalid;
        }
        if self.parts.is_empty() || self.message_id != message_id || self.total != total {
            // A new message (or a new total, section 2.6: start over).
            *self = Reassembly {
                message_id,
                total,
                first: 0,
                parts: vec![None; usize::from(total)],
                held: 0,
            };
        }
        let slot = usize::from(number - 1);
        let replaced = self.parts[slot].as_ref().map_or(0, Vec::len);
        let held = self.held - replaced + plain.len();
        if held > budget {
            *self = Reassembly::default();
            return Reassembled::OverBudget;
        }
        if number == 1 {
            self.first = first;
        }
        self.parts[slot] = Some(plain);
        self.held = held;
        if self.parts.iter().any(Option::is_none) {
            return Reassembled::Incomplete;
        }
        let inner: Vec<u8> = self.parts.iter().flatten().flatten().copied().collect();
        let first = self.first;
        *self = Reassembly::default();
        Reassembled::Complete { first, inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_past_its_budget_is_let_go() {
        let mut r = Reassembly::default();
        assert!(matches!(
            r.add(1, 1, 3, 41, vec![0; 600], 1000),
            Reassembled::Incomplete
        ));
        // The same fragment again replaces, not adds.
        assert!(matches!(
            r.add(1, 1, 3, 41, vec![0; 600], 1000),
            Reassembled::Incomplete
        ));
        assert_eq!(r.held(), 600);
        assert!(matches!(
            r.add(1, 2, 3, 0, vec![0; 500], 1000),
            Reassembled::OverBudget
        ));
        assert_eq!(r.held(), 0);
        // Within the budget it completes.
        assert!(matches!(
            r.add(2, 1, 2, 41, vec![1; 400], 1000),
            Reassembled::Incomplete
        ));
        match r.add(2, 2, 2, 0, vec![2; 400], 1000) {
            Reassembled::Complete { first, inner } => {
                assert_eq!((first, inner.len()), (41, 800));
            }
            _ => panic!("not complete"),
        }
        assert_eq!(r.held(), 0);
    }
}
