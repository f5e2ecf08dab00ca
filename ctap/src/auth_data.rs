//! Authenticator data (WebAuthn §6.1): rpIdHash, flags, counter, attested credential data and the
//! extensions map, decoded and built.

use serde_cbor_2::Value;

use super::cbor::{self, Map};
use super::error::CtapError;

pub const FLAG_UP: u8 = 0x01;
pub const FLAG_UV: u8 = 0x04;
pub const FLAG_AT: u8 = 0x40;
pub const FLAG_ED: u8 = 0x80;

/// Attested credential data: AAGUID, credential id and COSE public key.
#[derive(Debug, Clone, PartialEq)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    pub public_key: Value,
}

/// Decoded authenticator data.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub counter: u32,
    pub attested: Option<AttestedCredential>,
    /// The extensions map (text keys), empty when the ED flag is clear.
    pub extensions: Map,
}

impl AuthData {
    pub fn user_present(&self) -> bool {
        self.flags & FLAG_UP != 0
    }

    pub fn user_verified(&self) -> bool {
        self.flags & FLAG_UV != 0
    }

    /// An extension output by name.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        cbor::get_text(&self.extensions, name)
    }

    pub fn parse(data: &[u8]) -> Result<AuthData, CtapError> {
        if data.len() < 37 {
            return Err(CtapError::Malformed("authenticator data too short"));
        }
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(&data[..32]);
        let flags = data[32];
        let counter = u32::from_be_bytes([data[33], data[34], data[35], data[36]]);
        let mut rest = &data[37..];
        let attested = if flags & FLAG_AT != 0 {
            if rest.len() < 18 {
                return Err(CtapError::Malformed("attested credential data too short"));
            }
            let mut aaguid = [0u8; 16];
            aaguid.copy_from_slice(&rest[..16]);
            let id_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            rest = &rest[18..];
            if rest.len() < id_len {
                return Err(CtapError::Malformed("credential id truncated"));
            }
            let credential_id = rest[..id_len].to_vec();
            rest = &rest[id_len..];
            let (public_key, used) = cbor::decode_prefix(rest)?;
            rest = &rest[used..];
            Some(AttestedCredential {
                aaguid,
                credential_id,
                public_key,
            })
        } else {
            None
        };
        let extensions = if flags & FLAG_ED != 0 {
            let (ext, used) = cbor::decode_prefix(rest)?;
            rest = &rest[used..];
            match ext {
                Value::Map(m) => m,
                _ => return Err(CtapError::Malformed("extensions are not a map")),
            }
        } else {
            Map::new()
        };
        if !rest.is_empty() {
            return Err(CtapError::Malformed(
                "trailing bytes after authenticator data",
            ));
        }
        Ok(AuthData {
            rp_id_hash,
            flags,
            counter,
            attested,
            extensions,
        })
    }

    /// The byte encoding; AT and ED flags follow from the content.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CtapError> {
        let mut flags = self.flags & !(FLAG_AT | FLAG_ED);
        if self.attested.is_some() {
            flags |= FLAG_AT;
        }
        if !self.extensions.is_empty() {
            flags |= FLAG_ED;
        }
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.rp_id_hash);
        out.push(flags);
        out.extend_from_slice(&self.counter.to_be_bytes());
        if let Some(a) = &self.attested {
            let id_len = u16::try_from(a.credential_id.len())
                .map_err(|_| CtapError::Malformed("credential id too long"))?;
            out.extend_from_slice(&a.aaguid);
            out.extend_from_slice(&id_len.to_be_bytes());
            out.extend_from_slice(&a.credential_id);
            out.extend_from_slice(
                &serde_cbor_2::to_vec(&a.public_key)
                    .map_err(|_| CtapError::Malformed("cannot encode COSE key"))?,
            );
        }
        if !self.extensions.is_empty() {
            out.extend_from_slice(&cbor::encode(self.extensions.clone())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_credential_and_extensions() {
        let mut key = Map::new();
        key.insert(cbor::int(1), cbor::int(2));
        let mut ext = Map::new();
        ext.insert(cbor::text("hmac-secret"), Value::Bool(true));
        let ad = AuthData {
            rp_id_hash: [7; 32],
            flags: FLAG_UP,
            counter: 0x01020304,
            attested: Some(AttestedCredential {
                aaguid: [9; 16],
                credential_id: vec![1, 2, 3],
                public_key: Value::Map(key),
            }),
            extensions: ext,
        };
        let bytes = ad.to_bytes().unwrap();
        assert_eq!(bytes[32], FLAG_UP | FLAG_AT | FLAG_ED);
        assert_eq!(&bytes[33..37], &[1, 2, 3, 4]);
        let back = AuthData::parse(&bytes).unwrap();
        assert_eq!(back.flags, FLAG_UP | FLAG_AT | FLAG_ED);
        assert_eq!(back.attested, ad.attested);
        assert_eq!(back.extension("hmac-secret"), Some(&Value::Bool(true)));
        assert!(AuthData::parse(&bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(AuthData::parse(&trailing).is_err());
    }
}
