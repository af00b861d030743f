//! Signatures over bundle manifests: minisign (Ed25519), so retailers can also sign and check
//! with the stock `minisign` tool. No cryptography is written here.

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKeyBox, SignatureBox};
use std::io::Cursor;

/// A new key pair as text: (public key file, secret key file). The secret key is not
/// password-protected, so CI can sign unattended: keep the file private.
pub fn keygen(comment: &str) -> Result<(String, String), String> {
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
pub fn sign(data: &[u8], secret_key: &str, trusted_comment: &str) -> Result<String, String> {
    let sk = SecretKeyBox::from_string(secret_key)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(|e| format!("not a usable minisign secret key: {e}"))?;
    let signature = minisign::sign(None, &sk, Cursor::new(data), Some(trusted_comment), None)
        .map_err(|e| e.to_string())?;
    Ok(signature.into_string())
}

/// A public key from its base64 line (as in the config) or a whole `.pub` file.
pub fn public_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    let parsed = if text.contains('\n') {
        PublicKeyBox::from_string(text).and_then(|b| b.into_public_key())
    } else {
        PublicKey::from_base64(text)
    };
    parsed.map_err(|e| format!("not a minisign public key: {e}"))
}

/// The base64 line of a public key, as the config takes it.
pub fn public_key_line(key: &PublicKey) -> String {
    key.to_base64()
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

/// Which of `keys` signed `data`, if the signature holds.
pub fn verify(data: &[u8], signature: &str, keys: &[PublicKey]) -> Result<usize, SignatureProblem> {
    let signature =
        SignatureBox::from_string(signature).map_err(|_| SignatureProblem::Malformed)?;
    let signer = keys
        .iter()
        .position(|k| k.keynum() == signature.keynum())
        .ok_or(SignatureProblem::UnknownKey)?;
    minisign::verify(
        &keys[signer],
        &signature,
        Cursor::new(data),
        true,
        false,
        false,
    )
    .map(|()| signer)
    .map_err(|_| SignatureProblem::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_key_and_data_only() {
        let (pk, sk) = keygen("test").unwrap();
        let (other_pk, _) = keygen("other").unwrap();
        let (pk, other) = (public_key(&pk).unwrap(), public_key(&other_pk).unwrap());
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
        let line = public_key_line(&pk);
        assert_eq!(
            verify(b"manifest", &sig, &[public_key(&line).unwrap()]),
            Ok(0)
        );
    }
}
