//! IKE and ESP proposals written the strongSwan way
//! (`aes128gcm16-prfsha256-x25519`, `aes256-sha384-modp2048`,
//! `aes256gcm16-x25519-esn`), parsed into typed transforms that map onto the
//! transform IDs of [`crate::wire::consts`].
//!
//! As in strongSwan, one string is one proposal and may list several
//! algorithms of a kind (`aes128-aes256-sha256-x25519-ecp256`); an AEAD and
//! a non-AEAD cipher cannot share a proposal; an IKE proposal without a PRF
//! takes the PRF matching each integrity algorithm, while an AEAD IKE
//! proposal needs an explicit `prf*`; every IKE proposal needs a DH group.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::wire::consts::{dh, encr, esn, integ, prf, protocol, transform_type};
use crate::wire::{Proposal, Transform};

/// An encryption algorithm (transform type 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// ENCR_AES_GCM_16 with a 128-bit key (`aes128gcm16`, `aes128gcm128`).
    AesGcm16_128,
    /// ENCR_AES_GCM_16 with a 256-bit key (`aes256gcm16`, `aes256gcm128`).
    AesGcm16_256,
    /// ENCR_AES_CBC with a 128-bit key (`aes128`).
    AesCbc128,
    /// ENCR_AES_CBC with a 256-bit key (`aes256`).
    AesCbc256,
}

impl Encryption {
    /// The transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            Encryption::AesGcm16_128 | Encryption::AesGcm16_256 => encr::AES_GCM_16,
            Encryption::AesCbc128 | Encryption::AesCbc256 => encr::AES_CBC,
        }
    }

    /// The Key Length attribute, in bits.
    pub fn key_bits(self) -> u16 {
        match self {
            Encryption::AesGcm16_128 | Encryption::AesCbc128 => 128,
            Encryption::AesGcm16_256 | Encryption::AesCbc256 => 256,
        }
    }

    /// Whether this is a combined-mode (AEAD) cipher that needs no
    /// integrity transform.
    pub fn is_aead(self) -> bool {
        matches!(self, Encryption::AesGcm16_128 | Encryption::AesGcm16_256)
    }

    /// The transform as it goes into an SA payload.
    pub fn to_transform(self) -> Transform {
        Transform::with_key_length(transform_type::ENCR, self.transform_id(), self.key_bits())
    }

    /// The algorithm a transform from the wire stands for, if supported.
    pub fn from_transform(t: &Transform) -> Option<Self> {
        if t.kind != transform_type::ENCR {
            return None;
        }
        match (t.id, t.key_length()?) {
            (encr::AES_GCM_16, 128) => Some(Encryption::AesGcm16_128),
            (encr::AES_GCM_16, 256) => Some(Encryption::AesGcm16_256),
            (encr::AES_CBC, 128) => Some(Encryption::AesCbc128),
            (encr::AES_CBC, 256) => Some(Encryption::AesCbc256),
            _ => None,
        }
    }

    /// strongSwan's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Encryption::AesGcm16_128 => "aes128gcm16",
            Encryption::AesGcm16_256 => "aes256gcm16",
            Encryption::AesCbc128 => "aes128",
            Encryption::AesCbc256 => "aes256",
        }
    }
}

/// An integrity algorithm (transform type 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// AUTH_HMAC_SHA2_256_128 (`sha256`, `sha2_256`).
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (`sha384`, `sha2_384`).
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (`sha512`, `sha2_512`).
    HmacSha512_256,
}

impl Integrity {
    /// The transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            Integrity::HmacSha256_128 => integ::HMAC_SHA2_256_128,
            Integrity::HmacSha384_192 => integ::HMAC_SHA2_384_192,
            Integrity::HmacSha512_256 => integ::HMAC_SHA2_512_256,
        }
    }

    /// The PRF strongSwan pairs with this integrity algorithm when a
    /// proposal names none.
    pub fn matching_prf(self) -> Prf {
        match self {
            Integrity::HmacSha256_128 => Prf::HmacSha256,
            Integrity::HmacSha384_192 => Prf::HmacSha384,
            Integrity::HmacSha512_256 => Prf::HmacSha512,
        }
    }

    /// The transform as it goes into an SA payload.
    pub fn to_transform(self) -> Transform {
        Transform::new(transform_type::INTEG, self.transform_id())
    }

    /// The algorithm a transform from the wire stands for, if supported.
    pub fn from_transform(t: &Transform) -> Option<Self> {
        if t.kind != transform_type::INTEG || !t.attributes.is_empty() {
            return None;
        }
        [
            Integrity::HmacSha256_128,
            Integrity::HmacSha384_192,
            Integrity::HmacSha512_256,
        ]
        .into_iter()
        .find(|a| a.transform_id() == t.id)
    }

    /// strongSwan's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Integrity::HmacSha256_128 => "sha256",
            Integrity::HmacSha384_192 => "sha384",
            Integrity::HmacSha512_256 => "sha512",
        }
    }
}

/// A pseudorandom function (transform type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (`prfsha256`).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (`prfsha384`).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (`prfsha512`).
    HmacSha512,
}

impl Prf {
    /// The transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            Prf::HmacSha256 => prf::HMAC_SHA2_256,
            Prf::HmacSha384 => prf::HMAC_SHA2_384,
            Prf::HmacSha512 => prf::HMAC_SHA2_512,
        }
    }

    /// The transform as it goes into an SA payload.
    pub fn to_transform(self) -> Transform {
        Transform::new(transform_type::PRF, self.transform_id())
    }

    /// The algorithm a transform from the wire stands for, if supported.
    pub fn from_transform(t: &Transform) -> Option<Self> {
        if t.kind != transform_type::PRF || !t.attributes.is_empty() {
            return None;
        }
        [Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512]
            .into_iter()
            .find(|a| a.transform_id() == t.id)
    }

    /// strongSwan's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Prf::HmacSha256 => "prfsha256",
            Prf::HmacSha384 => "prfsha384",
            Prf::HmacSha512 => "prfsha512",
        }
    }
}

/// A Diffie-Hellman group (transform type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 31, Curve25519 (`x25519`, `curve25519`).
    Curve25519,
    /// Group 19, NIST P-256 (`ecp256`).
    Ecp256,
    /// Group 20, NIST P-384 (`ecp384`).
    Ecp384,
    /// Group 14, 2048-bit MODP (`modp2048`).
    Modp2048,
}

impl DhGroup {
    /// The transform ID (the group number).
    pub fn transform_id(self) -> u16 {
        match self {
            DhGroup::Curve25519 => dh::CURVE25519,
            DhGroup::Ecp256 => dh::ECP_256,
            DhGroup::Ecp384 => dh::ECP_384,
            DhGroup::Modp2048 => dh::MODP_2048,
        }
    }

    /// The group with this number, if supported.
    pub fn from_id(id: u16) -> Option<Self> {
        [
            DhGroup::Curve25519,
            DhGroup::Ecp256,
            DhGroup::Ecp384,
            DhGroup::Modp2048,
        ]
        .into_iter()
        .find(|g| g.transform_id() == id)
    }

    /// The transform as it goes into an SA payload.
    pub fn to_transform(self) -> Transform {
        Transform::new(transform_type::DH, self.transform_id())
    }

    /// The group a transform from the wire stands for, if supported.
    pub fn from_transform(t: &Transform) -> Option<Self> {
        if t.kind != transform_type::DH || !t.attributes.is_empty() {
            return None;
        }
        Self::from_id(t.id)
    }

    /// strongSwan's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            DhGroup::Curve25519 => "x25519",
            DhGroup::Ecp256 => "ecp256",
            DhGroup::Ecp384 => "ecp384",
            DhGroup::Modp2048 => "modp2048",
        }
    }
}

/// Extended Sequence Numbers (transform type 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Esn {
    /// 32-bit sequence numbers (`noesn`).
    NoEsn,
    /// 64-bit extended sequence numbers (`esn`).
    Esn,
}

impl Esn {
    /// The transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            Esn::NoEsn => esn::NO_ESN,
            Esn::Esn => esn::ESN,
        }
    }

    /// The transform as it goes into an SA payload.
    pub fn to_transform(self) -> Transform {
        Transform::new(transform_type::ESN, self.transform_id())
    }

    /// The value a transform from the wire stands for.
    pub fn from_transform(t: &Transform) -> Option<Self> {
        match (t.kind, t.id, t.attributes.is_empty()) {
            (transform_type::ESN, esn::NO_ESN, true) => Some(Esn::NoEsn),
            (transform_type::ESN, esn::ESN, true) => Some(Esn::Esn),
            _ => None,
        }
    }

    /// strongSwan's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Esn::NoEsn => "noesn",
            Esn::Esn => "esn",
        }
    }
}

/// One keyword of a proposal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Encr(Encryption),
    Integ(Integrity),
    Prf(Prf),
    Dh(DhGroup),
    Esn(Esn),
}

fn keyword(word: &str) -> Option<Keyword> {
    use Keyword as K;
    Some(match word.to_ascii_lowercase().as_str() {
        "aes128gcm16" | "aes128gcm128" => K::Encr(Encryption::AesGcm16_128),
        "aes256gcm16" | "aes256gcm128" => K::Encr(Encryption::AesGcm16_256),
        "aes128" => K::Encr(Encryption::AesCbc128),
        "aes256" => K::Encr(Encryption::AesCbc256),
        "sha256" | "sha2_256" => K::Integ(Integrity::HmacSha256_128),
        "sha384" | "sha2_384" => K::Integ(Integrity::HmacSha384_192),
        "sha512" | "sha2_512" => K::Integ(Integrity::HmacSha512_256),
        "prfsha256" | "prfsha2_256" => K::Prf(Prf::HmacSha256),
        "prfsha384" | "prfsha2_384" => K::Prf(Prf::HmacSha384),
        "prfsha512" | "prfsha2_512" => K::Prf(Prf::HmacSha512),
        "x25519" | "curve25519" => K::Dh(DhGroup::Curve25519),
        "ecp256" => K::Dh(DhGroup::Ecp256),
        "ecp384" => K::Dh(DhGroup::Ecp384),
        "modp2048" => K::Dh(DhGroup::Modp2048),
        "esn" => K::Esn(Esn::Esn),
        "noesn" => K::Esn(Esn::NoEsn),
        _ => return None,
    })
}

const KNOWN: &str = "aes128gcm16, aes256gcm16 (or aes128gcm128, aes256gcm128), aes128, aes256, \
                     sha256, sha384, sha512, prfsha256, prfsha384, prfsha512, x25519 (curve25519), \
                     ecp256, ecp384, modp2048, esn, noesn";

/// Why a proposal string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// Nothing between two dashes, or an empty string.
    #[error("empty algorithm keyword in {0:?}")]
    Empty(String),
    /// A keyword that is not an algorithm xdpsec supports.
    #[error("unknown algorithm keyword {keyword:?} in {proposal:?} (known: {KNOWN})")]
    UnknownKeyword {
        /// The keyword.
        keyword: String,
        /// The whole proposal.
        proposal: String,
    },
    /// A keyword of a kind the proposal's protocol does not use.
    #[error("{keyword:?} in {proposal:?}: {reason}")]
    Misplaced {
        /// The keyword.
        keyword: String,
        /// The whole proposal.
        proposal: String,
        /// Why it does not belong.
        reason: &'static str,
    },
    /// A rule about the combination of algorithms is broken.
    #[error("{proposal:?}: {reason}")]
    Combination {
        /// The whole proposal.
        proposal: String,
        /// The rule.
        reason: &'static str,
    },
}

fn push<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// An IKE SA proposal (`connections.NAME.proposals`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption algorithms, all AEAD or all not, in preference order.
    pub encryption: Vec<Encryption>,
    /// Integrity algorithms (empty for AEAD).
    pub integrity: Vec<Integrity>,
    /// PRFs (never empty).
    pub prf: Vec<Prf>,
    /// DH groups (never empty), the first one is what a KE payload uses.
    pub dh: Vec<DhGroup>,
}

impl IkeProposal {
    /// The proposals `default` stands for: AES-GCM and AES-CBC/HMAC-SHA2
    /// with every supported PRF and group, Curve25519 first.
    pub fn defaults() -> Vec<IkeProposal> {
        let all_prf = vec![Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512];
        let all_dh = vec![
            DhGroup::Curve25519,
            DhGroup::Ecp256,
            DhGroup::Ecp384,
            DhGroup::Modp2048,
        ];
        vec![
            IkeProposal {
                encryption: vec![Encryption::AesGcm16_128, Encryption::AesGcm16_256],
                integrity: Vec::new(),
                prf: all_prf.clone(),
                dh: all_dh.clone(),
            },
            IkeProposal {
                encryption: vec![Encryption::AesCbc128, Encryption::AesCbc256],
                integrity: vec![
                    Integrity::HmacSha256_128,
                    Integrity::HmacSha384_192,
                    Integrity::HmacSha512_256,
                ],
                prf: all_prf,
                dh: all_dh,
            },
        ]
    }

    /// Whether the encryption is AEAD (no integrity transform).
    pub fn is_aead(&self) -> bool {
        self.encryption.first().is_some_and(|e| e.is_aead())
    }

    /// The transforms in SA payload order (ENCR, PRF, INTEG, DH).
    pub fn transforms(&self) -> Vec<Transform> {
        let mut t: Vec<Transform> = self.encryption.iter().map(|e| e.to_transform()).collect();
        t.extend(self.prf.iter().map(|p| p.to_transform()));
        t.extend(self.integrity.iter().map(|i| i.to_transform()));
        t.extend(self.dh.iter().map(|g| g.to_transform()));
        t
    }

    /// The proposal as it goes into an SA payload (`spi` empty in the
    /// IKE_SA_INIT, the new initiator SPI in an IKE rekey).
    pub fn to_wire(&self, number: u8, spi: Vec<u8>) -> Proposal {
        Proposal {
            number,
            protocol: protocol::IKE,
            spi,
            transforms: self.transforms(),
        }
    }
}

impl FromStr for IkeProposal {
    type Err = ProposalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = IkeProposal {
            encryption: Vec::new(),
            integrity: Vec::new(),
            prf: Vec::new(),
            dh: Vec::new(),
        };
        for word in s.split('-') {
            match parse_keyword(s, word)? {
                Keyword::Encr(e) => push(&mut p.encryption, e),
                Keyword::Integ(i) => push(&mut p.integrity, i),
                Keyword::Prf(f) => push(&mut p.prf, f),
                Keyword::Dh(g) => push(&mut p.dh, g),
                Keyword::Esn(_) => {
                    return Err(misplaced(
                        s,
                        word,
                        "ESN belongs in esp_proposals, not IKE proposals",
                    ))
                }
            }
        }
        let combination = |reason| ProposalError::Combination {
            proposal: s.to_owned(),
            reason,
        };
        check_encryption(s, &p.encryption, &p.integrity)?;
        if p.prf.is_empty() {
            if p.is_aead() {
                return Err(combination(
                    "an AEAD proposal needs an explicit PRF (add prfsha256, prfsha384 or prfsha512)",
                ));
            }
            p.prf = p.integrity.iter().map(|i| i.matching_prf()).collect();
        }
        if p.dh.is_empty() {
            return Err(combination(
                "an IKE proposal needs a DH group (x25519, ecp256, ecp384 or modp2048)",
            ));
        }
        Ok(p)
    }
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self
            .encryption
            .iter()
            .map(|e| e.keyword())
            .chain(self.integrity.iter().map(|i| i.keyword()))
            .chain(self.prf.iter().map(|p| p.keyword()))
            .chain(self.dh.iter().map(|g| g.keyword()))
            .collect();
        f.write_str(&words.join("-"))
    }
}

/// An ESP Child SA proposal (`children.NAME.esp_proposals`). The data
/// plane does AES-GCM only, so only AEAD ciphers are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    /// AES-GCM-16 with 128 and/or 256-bit keys.
    pub encryption: Vec<Encryption>,
    /// The ESN choices offered; `noesn` unless the proposal says otherwise.
    pub esn: Vec<Esn>,
    /// DH groups for PFS in CREATE_CHILD_SA; empty: no PFS.
    pub dh: Vec<DhGroup>,
}

impl EspProposal {
    /// The proposal `default` stands for: AES-GCM-16 128 and 256, no ESN,
    /// no PFS.
    pub fn defaults() -> Vec<EspProposal> {
        vec![EspProposal {
            encryption: vec![Encryption::AesGcm16_128, Encryption::AesGcm16_256],
            esn: vec![Esn::NoEsn],
            dh: Vec::new(),
        }]
    }

    /// The transforms in SA payload order (ENCR, DH, ESN). `with_dh`
    /// drops the DH transforms where none may be sent (the first Child SA
    /// in IKE_AUTH, RFC 7296 section 1.2).
    pub fn transforms(&self, with_dh: bool) -> Vec<Transform> {
        let mut t: Vec<Transform> = self.encryption.iter().map(|e| e.to_transform()).collect();
        if with_dh {
            t.extend(self.dh.iter().map(|g| g.to_transform()));
        }
        t.extend(self.esn.iter().map(|e| e.to_transform()));
        t
    }

    /// The proposal as it goes into an SA payload, with our 4-byte
    /// inbound SPI.
    pub fn to_wire(&self, number: u8, spi: u32, with_dh: bool) -> Proposal {
        Proposal {
            number,
            protocol: protocol::ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms: self.transforms(with_dh),
        }
    }
}

impl FromStr for EspProposal {
    type Err = ProposalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = EspProposal {
            encryption: Vec::new(),
            esn: Vec::new(),
            dh: Vec::new(),
        };
        for word in s.split('-') {
            match parse_keyword(s, word)? {
                Keyword::Encr(e) if e.is_aead() => push(&mut p.encryption, e),
                Keyword::Encr(_) | Keyword::Integ(_) => {
                    return Err(misplaced(
                        s,
                        word,
                        "the xdpsec data plane does ESP with AES-GCM only \
                         (aes128gcm16, aes256gcm16)",
                    ))
                }
                Keyword::Prf(_) => {
                    return Err(misplaced(
                        s,
                        word,
                        "a PRF belongs in IKE proposals, not esp_proposals",
                    ))
                }
                Keyword::Dh(g) => push(&mut p.dh, g),
                Keyword::Esn(e) => push(&mut p.esn, e),
            }
        }
        check_encryption(s, &p.encryption, &[])?;
        if p.esn.is_empty() {
            p.esn.push(Esn::NoEsn);
        }
        Ok(p)
    }
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self
            .encryption
            .iter()
            .map(|e| e.keyword())
            .chain(self.dh.iter().map(|g| g.keyword()))
            .chain(self.esn.iter().map(|e| e.keyword()))
            .collect();
        f.write_str(&words.join("-"))
    }
}

fn parse_keyword(proposal: &str, word: &str) -> Result<Keyword, ProposalError> {
    if word.trim().is_empty() {
        return Err(ProposalError::Empty(proposal.to_owned()));
    }
    keyword(word.trim()).ok_or_else(|| ProposalError::UnknownKeyword {
        keyword: word.to_owned(),
        proposal: proposal.to_owned(),
    })
}

fn misplaced(proposal: &str, word: &str, reason: &'static str) -> ProposalError {
    ProposalError::Misplaced {
        keyword: word.to_owned(),
        proposal: proposal.to_owned(),
        reason,
    }
}

fn check_encryption(
    proposal: &str,
    encryption: &[Encryption],
    integrity: &[Integrity],
) -> Result<(), ProposalError> {
    let combination = |reason| ProposalError::Combination {
        proposal: proposal.to_owned(),
        reason,
    };
    if encryption.is_empty() {
        return Err(combination("no encryption algorithm"));
    }
    let aead = encryption[0].is_aead();
    if encryption.iter().any(|e| e.is_aead() != aead) {
        return Err(combination(
            "AEAD (aes*gcm16) and non-AEAD (aes128, aes256) ciphers cannot share a proposal; \
             write them as two proposals",
        ));
    }
    if aead && !integrity.is_empty() {
        return Err(combination(
            "an AEAD cipher needs no integrity algorithm; drop sha256/sha384/sha512 \
             (write prfsha* for the PRF)",
        ));
    }
    if !aead && integrity.is_empty() {
        return Err(combination(
            "AES-CBC needs an integrity algorithm (sha256, sha384 or sha512)",
        ));
    }
    Ok(())
}

/// A list of proposals as written in the config: `"default"` expands to
/// the defaults, anything else is parsed.
fn parse_list<'de, D, T>(d: D, defaults: fn() -> Vec<T>) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = ProposalError>,
{
    let words: Vec<ProposalString<T>> = Vec::deserialize(d)?;
    let mut out = Vec::new();
    for w in words {
        match w {
            ProposalString::Default => out.extend(defaults()),
            ProposalString::Proposal(p) => out.push(p),
        }
    }
    Ok(out)
}

enum ProposalString<T> {
    Default,
    Proposal(T),
}

impl<T: FromStr<Err = ProposalError>> FromStr for ProposalString<T> {
    type Err = ProposalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("default") {
            return Ok(ProposalString::Default);
        }
        s.parse().map(ProposalString::Proposal)
    }
}

impl<'de, T: FromStr<Err = ProposalError>> Deserialize<'de> for ProposalString<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::values::from_str(
            d,
            "a proposal such as \"aes128gcm16-prfsha256-x25519\" or \"default\"",
        )
    }
}

/// `proposals = [...]` of a connection.
pub(crate) fn deserialize_ike<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<IkeProposal>, D::Error> {
    parse_list(d, IkeProposal::defaults)
}

/// `esp_proposals = [...]` of a child.
pub(crate) fn deserialize_esp<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<EspProposal>, D::Error> {
    parse_list(d, EspProposal::defaults)
}
