//! Proposals as algorithms this crate implements (converted from the
//! config's parsed proposal strings), their SA payload form and the
//! responder's choice (RFC 7296 section 2.7).

use std::fmt;

use crate::crypto::{DhGroup, EncrAlg, IntegAlg, PrfAlg};
use crate::wire::consts::{esn, protocol, transform_type as tt};
use crate::wire::{Proposal, Transform};

/// An IKE proposal: every algorithm listed is acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption algorithms.
    pub encr: Vec<EncrAlg>,
    /// Integrity algorithms (empty with AEAD).
    pub integ: Vec<IntegAlg>,
    /// PRFs.
    pub prf: Vec<PrfAlg>,
    /// DH groups (the first one is used for the initiator's KE).
    pub dh: Vec<DhGroup>,
}

/// An ESP proposal for a Child SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    /// Encryption algorithms (AES-GCM-16 only).
    pub encr: Vec<EncrAlg>,
    /// PFS groups for CREATE_CHILD_SA; empty for none.
    pub dh: Vec<DhGroup>,
    /// Acceptable ESN settings, in preference order (`true` = ESN).
    pub esn: Vec<bool>,
}

/// The algorithms an IKE SA runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeAlgorithms {
    pub encr: EncrAlg,
    pub integ: Option<IntegAlg>,
    pub prf: PrfAlg,
    pub dh: DhGroup,
}

impl fmt::Display for IkeAlgorithms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encr.name())?;
        if let Some(i) = self.integ {
            write!(f, "-{}", i.name())?;
        }
        write!(f, "-{}-{}", self.prf.name(), self.dh.name())
    }
}

/// The algorithms a Child SA runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildAlgorithms {
    pub encr: EncrAlg,
    pub dh: Option<DhGroup>,
    pub esn: bool,
}

impl fmt::Display for ChildAlgorithms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encr.name())?;
        if let Some(g) = self.dh {
            write!(f, "-{}", g.name())?;
        }
        f.write_str(if self.esn { "-esn" } else { "-noesn" })
    }
}

impl IkeProposal {
    /// From a parsed `proposals` entry.
    pub fn from_config(p: &crate::config::IkeProposal) -> Result<Self, String> {
        let bad = |what: &str| format!("{what} not implemented by the IKE crypto");
        Ok(IkeProposal {
            encr: p
                .encryption
                .iter()
                .map(|e| {
                    EncrAlg::from_transform(e.transform_id(), Some(e.key_bits()))
                        .ok_or_else(|| bad(e.keyword()))
                })
                .collect::<Result<_, _>>()?,
            integ: p
                .integrity
                .iter()
                .map(|i| IntegAlg::from_id(i.transform_id()).ok_or_else(|| bad(i.keyword())))
                .collect::<Result<_, _>>()?,
            prf: p
                .prf
                .iter()
                .map(|f| PrfAlg::from_id(f.transform_id()).ok_or_else(|| bad(f.keyword())))
                .collect::<Result<_, _>>()?,
            dh: p
                .dh
                .iter()
                .map(|g| DhGroup::from_id(g.transform_id()).ok_or_else(|| bad(g.keyword())))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl EspProposal {
    /// From a parsed `esp_proposals` entry.
    pub fn from_config(p: &crate::config::EspProposal) -> Result<Self, String> {
        let bad = |what: &str| format!("{what} not implemented for ESP");
        Ok(EspProposal {
            encr: p
                .encryption
                .iter()
                .map(|e| {
                    EncrAlg::from_transform(e.transform_id(), Some(e.key_bits()))
                        .filter(|a| a.is_aead())
                        .ok_or_else(|| bad(e.keyword()))
                })
                .collect::<Result<_, _>>()?,
            dh: p
                .dh
                .iter()
                .map(|g| DhGroup::from_id(g.transform_id()).ok_or_else(|| bad(g.keyword())))
                .collect::<Result<_, _>>()?,
            esn: p
                .esn
                .iter()
                .map(|e| *e == crate::config::Esn::Esn)
                .collect(),
        })
    }
}

fn encr_transform(e: EncrAlg) -> Transform {
    Transform::with_key_length(tt::ENCR, e.id(), e.bits())
}

impl IkeProposal {
    /// The SA payload proposal (number `number`, SPI `spi`: empty in
    /// IKE_SA_INIT, 8 bytes when rekeying).
    pub(crate) fn to_wire(&self, number: u8, spi: Vec<u8>) -> Proposal {
        let mut t: Vec<Transform> = self.encr.iter().map(|e| encr_transform(*e)).collect();
        t.extend(self.prf.iter().map(|p| Transform::new(tt::PRF, p.id())));
        t.extend(self.integ.iter().map(|i| Transform::new(tt::INTEG, i.id())));
        t.extend(self.dh.iter().map(|g| Transform::new(tt::DH, g.id())));
        Proposal {
            number,
            protocol: protocol::IKE,
            spi,
            transforms: t,
        }
    }

    /// The proposal holding exactly the chosen algorithms (what a
    /// responder sends back, and what an initiator offers when it rekeys).
    pub(crate) fn from_chosen(a: &IkeAlgorithms) -> Self {
        IkeProposal {
            encr: vec![a.encr],
            integ: a.integ.into_iter().collect(),
            prf: vec![a.prf],
            dh: vec![a.dh],
        }
    }
}

impl EspProposal {
    /// The SA payload proposal; `with_dh` is false in IKE_AUTH (the first
    /// Child SA uses the IKE SA's DH, section 1.2).
    pub(crate) fn to_wire(&self, number: u8, spi: u32, with_dh: bool) -> Proposal {
        let mut t: Vec<Transform> = self.encr.iter().map(|e| encr_transform(*e)).collect();
        if with_dh {
            t.extend(self.dh.iter().map(|g| Transform::new(tt::DH, g.id())));
        }
        t.extend(
            self.esn
                .iter()
                .map(|e| Transform::new(tt::ESN, if *e { esn::ESN } else { esn::NO_ESN })),
        );
        Proposal {
            number,
            protocol: protocol::ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms: t,
        }
    }

    pub(crate) fn from_chosen(a: &ChildAlgorithms) -> Self {
        EspProposal {
            encr: vec![a.encr],
            dh: a.dh.into_iter().collect(),
            esn: vec![a.esn],
        }
    }
}

/// The transforms of one received proposal, sorted by type; unknown
/// transform IDs are kept out so they never match.
#[derive(Default)]
struct Offered {
    encr: Vec<EncrAlg>,
    unknown_encr: bool,
    prf: Vec<PrfAlg>,
    integ: Vec<Option<IntegAlg>>,
    dh: Vec<Option<DhGroup>>,
    esn: Vec<bool>,
    unknown_type: bool,
}

fn offered(p: &Proposal) -> Offered {
    let mut o = Offered::default();
    for t in &p.transforms {
        let other_attrs = t
            .attributes
            .iter()
            .any(|a| a.kind != crate::wire::consts::attribute::KEY_LENGTH);
        match t.kind {
            tt::ENCR => match EncrAlg::from_transform(t.id, t.key_length()) {
                Some(e) if !other_attrs => o.encr.push(e),
                _ => o.unknown_encr = true,
            },
            tt::PRF => o.prf.extend(PrfAlg::from_id(t.id)),
            tt::INTEG => {
                if t.id == crate::wire::consts::integ::NONE {
                    o.integ.push(None);
                } else if let Some(i) = IntegAlg::from_id(t.id) {
                    o.integ.push(Some(i));
                }
            }
            tt::DH => {
                if t.id == 0 {
                    o.dh.push(None);
                } else if let Some(g) = DhGroup::from_id(t.id) {
                    o.dh.push(Some(g));
                }
            }
            tt::ESN => match t.id {
                esn::ESN => o.esn.push(true),
                esn::NO_ESN => o.esn.push(false),
                _ => {}
            },
            _ => o.unknown_type = true,
        }
    }
    o
}

fn first_common<T: Copy + PartialEq>(theirs: &[T], ours: &[T]) -> Option<T> {
    theirs.iter().copied().find(|t| ours.contains(t))
}

/// The responder's choice among the initiator's IKE proposals: the first
/// of theirs that one of ours accepts, each transform type taken in their
/// order. Returns the chosen algorithms and the proposal's number.
pub(crate) fn select_ike(theirs: &[Proposal], ours: &[IkeProposal]) -> Option<(IkeAlgorithms, u8)> {
    select_ike_with_ke(theirs, ours, None)
}

/// [`select_ike`], preferring the DH group of the initiator's KE payload
/// when both sides accept it: no INVALID_KE_PAYLOAD round trip then.
pub(crate) fn select_ike_with_ke(
    theirs: &[Proposal],
    ours: &[IkeProposal],
    ke_group: Option<DhGroup>,
) -> Option<(IkeAlgorithms, u8)> {
    for p in theirs.iter().filter(|p| p.protocol == protocol::IKE) {
        let o = offered(p);
        if o.unknown_type {
            continue;
        }
        for mine in ours {
            let Some(encr) = first_common(&o.encr, &mine.encr) else {
                continue;
            };
            let Some(prf) = first_common(&o.prf, &mine.prf) else {
                continue;
            };
            let integ = if encr.is_aead() {
                if o.integ.iter().any(|i| i.is_some()) && !o.integ.contains(&None) {
                    continue;
                }
                None
            } else {
                let mine_integ: Vec<Option<IntegAlg>> =
                    mine.integ.iter().copied().map(Some).collect();
                match first_common(&o.integ, &mine_integ) {
                    Some(i) => i,
                    None => continue,
                }
            };
            let mine_dh: Vec<Option<DhGroup>> = mine.dh.iter().copied().map(Some).collect();
            let Some(Some(first)) = first_common(&o.dh, &mine_dh) else {
                continue;
            };
            let dh = match ke_group {
                Some(g) if o.dh.contains(&Some(g)) && mine.dh.contains(&g) => g,
                _ => first,
            };
            return Some((
                IkeAlgorithms {
                    encr,
                    integ,
                    prf,
                    dh,
                },
                p.number,
            ));
        }
    }
    None
}

/// The responder's choice among ESP proposals. `with_dh`: whether DH
/// transforms count (CREATE_CHILD_SA); in IKE_AUTH they are ignored.
/// Returns the algorithms, the proposal's number and the peer's SPI.
pub(crate) fn select_esp(
    theirs: &[Proposal],
    ours: &[EspProposal],
    with_dh: bool,
) -> Option<(ChildAlgorithms, u8, u32)> {
    for p in theirs.iter().filter(|p| p.protocol == protocol::ESP) {
        let Ok(spi) = <[u8; 4]>::try_from(p.spi.as_slice()) else {
            continue;
        };
        let o = offered(p);
        if o.unknown_type || o.integ.iter().any(|i| i.is_some()) {
            continue;
        }
        for mine in ours {
            let Some(encr) = first_common(&o.encr, &mine.encr) else {
                continue;
            };
            let esn_theirs = if o.esn.is_empty() {
                vec![false]
            } else {
                o.esn.clone()
            };
            let Some(esn) = first_common(&mine.esn, &esn_theirs) else {
                continue;
            };
            let dh = if with_dh {
                let theirs_dh: Vec<DhGroup> = o.dh.iter().flatten().copied().collect();
                match (theirs_dh.is_empty(), mine.dh.is_empty()) {
                    (true, true) => None,
                    (false, false) => match first_common(&theirs_dh, &mine.dh) {
                        Some(g) => Some(g),
                        None => continue,
                    },
                    // A PFS mismatch: strongSwan fails these too.
                    _ => continue,
                }
            } else {
                None
            };
            return Some((
                ChildAlgorithms { encr, dh, esn },
                p.number,
                u32::from_be_bytes(spi),
            ));
        }
    }
    None
}

/// The number of the peer's ESP proposal that `chosen` came from: the
/// answer must repeat it (section 3.3.6).
pub(crate) fn esp_number(theirs: &[Proposal], chosen: &ChildAlgorithms, with_dh: bool) -> u8 {
    select_esp(theirs, &[EspProposal::from_chosen(chosen)], with_dh).map_or(1, |(_, n, _)| n)
}
