//! The local key provider: one 256-bit master key in a file.
//!
//! For development and small single-node use only: the key sits on the same
//! machine as the data it protects, which a PCI deployment must avoid (keep
//! keys in KMS). Start-up says so loudly.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::provider::{DataKey, EncryptionContext, KeyError, KeyProvider, WrappedKey};

const NONCE_LEN: usize = 12;

/// Wraps data keys with AES-256-GCM under the master key, the encryption
/// context as associated data.
pub struct LocalKeyProvider {
    key: RandomizedNonceKey,
    key_id: String,
}

impl LocalKeyProvider {
    /// Opens the master key at `path`, creating it (0600) when absent.
    /// Returns the provider and whether the file was created.
    pub fn open_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        let mut created = false;
        let bytes: Zeroizing<Vec<u8>> = match fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                SystemRandom::new()
                    .fill(&mut k)
                    .map_err(|_| KeyError::Config("no OS random source".into()))?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| io_err(path, e))?;
                }
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| io_err(path, e))?;
                f.write_all(&k).map_err(|e| io_err(path, e))?;
                f.sync_all().map_err(|e| io_err(path, e))?;
                created = true;
                k
            }
            Err(e) => return Err(io_err(path, e)),
        };
        if bytes.len() != 32 {
            return Err(KeyError::Config(format!(
                "{} must hold exactly 32 bytes, found {}",
                path.display(),
                bytes.len()
            )));
        }
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "master key file is readable by group or others; chmod 600 it");
        }
        let id = digest::digest(&digest::SHA256, &bytes);
        let key_id = format!("local:{}", hex::encode(&id.as_ref()[..8]));
        let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| KeyError::Config("master key rejected".into()))?;
        Ok((Self { key, key_id }, created))
    }
}

fn io_err(path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Config(format!("master key {}: {e}", path.display()))
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey), KeyError> {
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(k.as_mut())
            .map_err(|_| KeyError::Unavailable("no OS random source".into()))?;
        let mut buf = k.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(ctx.canonical_bytes()), &mut buf)
            .map_err(|_| KeyError::Unavailable("seal failed".into()))?;
        let mut blob = nonce.as_ref().to_vec();
        blob.extend_from_slice(&buf);
        Ok((
            DataKey::from_bytes(*k),
            WrappedKey {
                key_id: self.key_id.clone(),
                blob,
            },
        ))
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        if wrapped.key_id != self.key_id || wrapped.blob.len() != NONCE_LEN + 32 + 16 {
            return Err(KeyError::Unwrap);
        }
        let (n, ct) = wrapped.blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| KeyError::Unwrap)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(ctx.canonical_bytes()), &mut buf)
            .map_err(|_| KeyError::Unwrap)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(plain);
        let key = DataKey::from_bytes(out);
        zeroize::Zeroize::zeroize(&mut out);
        Ok(key)
    }

    async fn check(&self) -> Result<(), KeyError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wraps_under_context_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (p, created) = LocalKeyProvider::open_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let ctx = EncryptionContext::new("dev", "pan");
        let (k, w) = p.generate_data_key(&ctx).await.unwrap();
        let k2 = p.decrypt_data_key(&w, &ctx).await.unwrap();
        assert_eq!(k.expose(), k2.expose());
        let other = EncryptionContext::new("dev", "pii");
        assert!(matches!(
            p.decrypt_data_key(&w, &other).await,
            Err(KeyError::Unwrap)
        ));
        let (again, created) = LocalKeyProvider::open_or_create(&path).unwrap();
        assert!(!created);
        assert!(again.decrypt_data_key(&w, &ctx).await.is_ok());
    }
}
