//! The numbers of RFC 7296 (IANA "IKEv2 Parameters") used by xdpsec, plus
//! the NAT traversal notifies that RFC 3948 UDP encapsulation relies on.

/// Exchange types (RFC 7296 section 3.1).
pub mod exchange {
    /// IKE_SA_INIT.
    pub const IKE_SA_INIT: u8 = 34;
    /// IKE_AUTH.
    pub const IKE_AUTH: u8 = 35;
    /// CREATE_CHILD_SA.
    pub const CREATE_CHILD_SA: u8 = 36;
    /// INFORMATIONAL.
    pub const INFORMATIONAL: u8 = 37;
}

/// Payload types (RFC 7296 section 3.2).
pub mod payload {
    /// No Next Payload.
    pub const NONE: u8 = 0;
    /// Security Association.
    pub const SA: u8 = 33;
    /// Key Exchange.
    pub const KE: u8 = 34;
    /// Identification - Initiator.
    pub const IDI: u8 = 35;
    /// Identification - Responder.
    pub const IDR: u8 = 36;
    /// Certificate.
    pub const CERT: u8 = 37;
    /// Certificate Request.
    pub const CERTREQ: u8 = 38;
    /// Authentication.
    pub const AUTH: u8 = 39;
    /// Nonce.
    pub const NONCE: u8 = 40;
    /// Notify.
    pub const NOTIFY: u8 = 41;
    /// Delete.
    pub const DELETE: u8 = 42;
    /// Vendor ID.
    pub const VENDOR_ID: u8 = 43;
    /// Traffic Selector - Initiator.
    pub const TSI: u8 = 44;
    /// Traffic Selector - Responder.
    pub const TSR: u8 = 45;
    /// Encrypted and Authenticated.
    pub const SK: u8 = 46;
    /// Configuration.
    pub const CP: u8 = 47;
    /// Extensible Authentication.
    pub const EAP: u8 = 48;
    /// Encrypted and Authenticated Fragment (RFC 7383).
    pub const SKF: u8 = 53;

    /// Whether this implementation knows the payload type.
    pub const fn is_known(kind: u8) -> bool {
        matches!(kind, SA..=EAP | SKF)
    }
}

/// Protocol IDs (RFC 7296 section 3.3.1).
pub mod protocol {
    /// IKE.
    pub const IKE: u8 = 1;
    /// AH.
    pub const AH: u8 = 2;
    /// ESP.
    pub const ESP: u8 = 3;
}

/// Transform types (RFC 7296 section 3.3.2).
pub mod transform_type {
    /// Encryption Algorithm (ENCR).
    pub const ENCR: u8 = 1;
    /// Pseudorandom Function (PRF).
    pub const PRF: u8 = 2;
    /// Integrity Algorithm (INTEG).
    pub const INTEG: u8 = 3;
    /// Diffie-Hellman Group (D-H).
    pub const DH: u8 = 4;
    /// Extended Sequence Numbers (ESN).
    pub const ESN: u8 = 5;
}

/// Encryption transform IDs.
pub mod encr {
    /// ENCR_AES_CBC (needs a key length attribute).
    pub const AES_CBC: u16 = 12;
    /// ENCR_AES_GCM_16 (RFC 4106; needs a key length attribute).
    pub const AES_GCM_16: u16 = 20;
}

/// Pseudorandom function transform IDs.
pub mod prf {
    /// PRF_HMAC_SHA2_256.
    pub const HMAC_SHA2_256: u16 = 5;
    /// PRF_HMAC_SHA2_384.
    pub const HMAC_SHA2_384: u16 = 6;
    /// PRF_HMAC_SHA2_512.
    pub const HMAC_SHA2_512: u16 = 7;
}

/// Integrity transform IDs.
pub mod integ {
    /// NONE (with combined-mode ciphers such as AES-GCM).
    pub const NONE: u16 = 0;
    /// AUTH_HMAC_SHA2_256_128.
    pub const HMAC_SHA2_256_128: u16 = 12;
    /// AUTH_HMAC_SHA2_384_192.
    pub const HMAC_SHA2_384_192: u16 = 13;
    /// AUTH_HMAC_SHA2_512_256.
    pub const HMAC_SHA2_512_256: u16 = 14;
}

/// Diffie-Hellman group transform IDs.
pub mod dh {
    /// 2048-bit MODP group.
    pub const MODP_2048: u16 = 14;
    /// 256-bit random ECP group (NIST P-256).
    pub const ECP_256: u16 = 19;
    /// 384-bit random ECP group (NIST P-384).
    pub const ECP_384: u16 = 20;
    /// Curve25519 (RFC 8031).
    pub const CURVE25519: u16 = 31;
}

/// Extended Sequence Numbers transform IDs.
pub mod esn {
    /// No Extended Sequence Numbers.
    pub const NO_ESN: u16 = 0;
    /// Extended Sequence Numbers.
    pub const ESN: u16 = 1;
}

/// Transform attribute types (RFC 7296 section 3.3.5).
pub mod attribute {
    /// Key Length (in bits), always in TV format.
    pub const KEY_LENGTH: u16 = 14;
}

/// Identification types (RFC 7296 section 3.5).
pub mod id {
    /// A single four-octet IPv4 address.
    pub const IPV4_ADDR: u8 = 1;
    /// A fully-qualified domain name string.
    pub const FQDN: u8 = 2;
    /// A fully-qualified RFC 822 email address string.
    pub const RFC822_ADDR: u8 = 3;
    /// A single sixteen-octet IPv6 address.
    pub const IPV6_ADDR: u8 = 5;
    /// The binary DER encoding of an ASN.1 X.500 Distinguished Name.
    pub const DER_ASN1_DN: u8 = 9;
    /// The binary DER encoding of an ASN.1 X.509 GeneralName.
    pub const DER_ASN1_GN: u8 = 10;
    /// An opaque octet stream for vendor-specific information.
    pub const KEY_ID: u8 = 11;
}

/// Authentication methods (RFC 7296 section 3.8, RFC 7427).
pub mod auth_method {
    /// RSA Digital Signature (PKCS#1 v1.5 over a SHA-1 digest).
    pub const RSA_SIG: u8 = 1;
    /// Shared Key Message Integrity Code.
    pub const SHARED_KEY_MIC: u8 = 2;
    /// ECDSA with SHA-256 on the P-256 curve (RFC 4754).
    pub const ECDSA_SHA256_P256: u8 = 9;
    /// ECDSA with SHA-384 on the P-384 curve (RFC 4754).
    pub const ECDSA_SHA384_P384: u8 = 10;
    /// Digital Signature (RFC 7427): an AlgorithmIdentifier, then the signature.
    pub const DIGITAL_SIGNATURE: u8 = 14;
}

/// Certificate encodings of CERT and CERTREQ payloads (section 3.6).
pub mod cert_encoding {
    /// X.509 Certificate - Signature (DER).
    pub const X509_SIGNATURE: u8 = 4;
}

/// Hash algorithms of SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4).
pub mod hash_algorithm {
    /// SHA2-256.
    pub const SHA2_256: u16 = 2;
    /// SHA2-384.
    pub const SHA2_384: u16 = 3;
    /// SHA2-512.
    pub const SHA2_512: u16 = 4;
}

/// Traffic selector types (RFC 7296 section 3.13.1).
pub mod ts {
    /// A range of IPv4 addresses.
    pub const IPV4_ADDR_RANGE: u8 = 7;
    /// A range of IPv6 addresses.
    pub const IPV6_ADDR_RANGE: u8 = 8;
}

/// Notify message types (RFC 7296 section 3.10.1).
pub mod notify {
    /// UNSUPPORTED_CRITICAL_PAYLOAD (data: the one-octet payload type).
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    /// INVALID_IKE_SPI.
    pub const INVALID_IKE_SPI: u16 = 4;
    /// INVALID_MAJOR_VERSION.
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    /// INVALID_SYNTAX.
    pub const INVALID_SYNTAX: u16 = 7;
    /// INVALID_MESSAGE_ID.
    pub const INVALID_MESSAGE_ID: u16 = 9;
    /// INVALID_SPI.
    pub const INVALID_SPI: u16 = 11;
    /// NO_PROPOSAL_CHOSEN.
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// INVALID_KE_PAYLOAD (data: the two-octet accepted DH group).
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    /// AUTHENTICATION_FAILED.
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// SINGLE_PAIR_REQUIRED.
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    /// NO_ADDITIONAL_SAS.
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    /// INTERNAL_ADDRESS_FAILURE.
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    /// FAILED_CP_REQUIRED.
    pub const FAILED_CP_REQUIRED: u16 = 37;
    /// TS_UNACCEPTABLE.
    pub const TS_UNACCEPTABLE: u16 = 38;
    /// INVALID_SELECTORS.
    pub const INVALID_SELECTORS: u16 = 39;
    /// TEMPORARY_FAILURE.
    pub const TEMPORARY_FAILURE: u16 = 43;
    /// CHILD_SA_NOT_FOUND.
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    /// TS_MAX_QUEUE (RFC 9611): the responder takes no further
    /// per-resource Child SA for these selectors.
    pub const TS_MAX_QUEUE: u16 = 48;

    /// INITIAL_CONTACT.
    pub const INITIAL_CONTACT: u16 = 16384;
    /// SET_WINDOW_SIZE.
    pub const SET_WINDOW_SIZE: u16 = 16385;
    /// ADDITIONAL_TS_POSSIBLE.
    pub const ADDITIONAL_TS_POSSIBLE: u16 = 16386;
    /// IPCOMP_SUPPORTED.
    pub const IPCOMP_SUPPORTED: u16 = 16387;
    /// NAT_DETECTION_SOURCE_IP (NAT-T, RFC 7296 section 2.23 / RFC 3948).
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    /// NAT_DETECTION_DESTINATION_IP (NAT-T, RFC 7296 section 2.23 / RFC 3948).
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    /// COOKIE.
    pub const COOKIE: u16 = 16390;
    /// USE_TRANSPORT_MODE.
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    /// HTTP_CERT_LOOKUP_SUPPORTED.
    pub const HTTP_CERT_LOOKUP_SUPPORTED: u16 = 16392;
    /// REKEY_SA.
    pub const REKEY_SA: u16 = 16393;
    /// ESP_TFC_PADDING_NOT_SUPPORTED.
    pub const ESP_TFC_PADDING_NOT_SUPPORTED: u16 = 16394;
    /// NON_FIRST_FRAGMENTS_ALSO.
    pub const NON_FIRST_FRAGMENTS_ALSO: u16 = 16395;
    /// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383).
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    /// SIGNATURE_HASH_ALGORITHMS (RFC 7427; data: two-octet hash IDs).
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;
    /// SA_RESOURCE_INFO (RFC 9611): the Child SA is a fallback or
    /// per-resource SA; data: an optional opaque resource identifier.
    /// (16442 is USE_AGGFRAG, RFC 9347; 16444 is what IANA assigned here.)
    pub const SA_RESOURCE_INFO: u16 = 16444;

    /// Whether a notify type is an error type (below 16384).
    pub const fn is_error(kind: u16) -> bool {
        kind < 16384
    }
}
