//! Signatures over bundle manifests: minisign (Ed25519), so retailers can also sign and check
//! with the stock `minisign` tool. No cryptography is written here.
//!
//! Routers only verify, with `minisign-verify` (small, no dependencies); making keys and
//! signatures needs the `minisign` crate and its key encryption, behind the `authoring`
//! feature that router builds leave out.

pub use minisign_verify::PublicKey;
use minisign_verify::{Error, Signature};

/// A new key pair as text: (public key file, secret key file). The secret key is not
/// password-protected, so CI can sign unattended: keep the file private.
#[cfg(feature = "authoring")]
pub fn keygen(comment: &str) -> Result<(String, String), String> {
    use minisign::KeyPair;
    let pair = KeyPair::generate_unencrypted_keypair().map_err(|e| e.to_string())?;
    let pk = pair.pk.to_box().map_err(|e| e.to_string())?.into_string();
    let sk = pair
        .sk
        .to_box(Some(comment))
        .map_err(|e| e.to_string())?
        .into_string();
    Ok((pk, sk))
}

/// Signs `data` with the secret key file's text; the signature file's text.
#[cfg(feature = "authoring")]
pub fn sign(data: &[u8], secret_key: &str, trusted_comment: &str) -> Result<String, String> {
    use minisign::SecretKeyBox;
    use std::io::Cursor;
    let sk = SecretKeyBox::from_string(secret_key)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(|e| format!("not a usable minisign secret key: {e}"))?;
    let signature = minisign::sign(None, &sk, Cursor::new(data), Some(trusted_comment), None)
        .map_err(|e| e.to_string())?;
    Ok(signature.into_string())
}

/// A public key from its base64 line (as in the config) or a whole `.pub` file.
pub fn public_key(text: &str) -> Result<PublicKey, String> {
    let parsed = match public_key_line(text) {
        Some(line) if !text.trim().contains('\n') => PublicKey::from_base64(line),
        _ => PublicKey::decode(text.trim()),
    };
    parsed.map_err(|e| format!("not a minisign public key: {e}"))
}

/// The base64 line of a `.pub` file (its last line), as the config takes it.
pub fn public_key_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureProblem {
    /// Not a signature at all.
    Malformed,
    /// Signed by a key that none of `keys` is.
    UnknownKey,
    /// Signed by one of the keys, but the data changed since.
    Invalid,
}

/// Which of `keys` signed `data`, if the signature holds. Only prehashed signatures (what
/// minisign has made by default since 0.8) are accepted, as the `minisign` tool does.
pub fn verify(data: &[u8], signature: &str, keys: &[PublicKey]) -> Result<usize, SignatureProblem> {
    let signature = Signature::decode(signature).map_err(|_| SignatureProblem::Malformed)?;
    let mut problem = SignatureProblem::UnknownKey;
    for (i, key) in keys.iter().enumerate() {
        match key.verify(data, &signature, false) {
            Ok(()) => return Ok(i),
            // Another key: try the next one.
            Err(Error::UnexpectedKeyId) => {}
            Err(_) => problem = SignatureProblem::Invalid,
        }
    }
    Err(problem)
}

#[cfg(all(test, feature = "authoring"))]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_key_and_data_only() {
        let (pk_file, sk) = keygen("test").unwrap();
        let (other_pk, _) = keygen("other").unwrap();
        let (pk, other) = (
            public_key(&pk_file).unwrap(),
            public_key(&other_pk).unwrap(),
        );
        let sig = sign(b"manifest", &sk, "probegate test").unwrap();
        assert_eq!(
            verify(b"manifest", &sig, &[other.clone(), pk.clone()]),
            Ok(1)
        );
        assert_eq!(
            verify(b"manifest!", &sig, std::slice::from_ref(&pk)),
            Err(SignatureProblem::Invalid)
        );
        assert_eq!(
            verify(b"manifest", &sig, &[other]),
            Err(SignatureProblem::UnknownKey)
        );
        assert_eq!(
            verify(b"manifest", "junk", std::slice::from_ref(&pk)),
            Err(SignatureProblem::Malformed)
        );
        // The config's one-line form reads back as the same key.
        let line = public_key_line(&pk_file).unwrap();
        assert!(!line.contains(' '), "{line}");
        assert_eq!(
            verify(b"manifest", &sig, &[public_key(line).unwrap()]),
            Ok(0)
        );
        assert!(public_key("RWQ-not-base64").is_err());
    }
}
