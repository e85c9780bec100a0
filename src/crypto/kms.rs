//! The AWS KMS key provider: GenerateDataKey and Decrypt under one KMS key
//! per classification, with the encryption context bound to every call.
//!
//! Only data keys and service-held secrets ever reach KMS (a few per day),
//! never a value: the keyring caches what KMS unwraps. ReEncrypt is here
//! for `tokenvault rewrap`, which moves wrapped keys to another KMS key
//! without their plaintext ever entering the service.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroize;

use crate::aws::Failure;

use super::provider::{DataKey, EncryptionContext, KeyError, KeyProvider, WrappedKey};

/// The classification whose key wraps service-held secrets when no
/// `system` key is configured.
const DEFAULT_SYSTEM_CLASSIFICATION: &str = "pan";

/// Wraps and unwraps data keys with KMS.
pub struct KmsKeyProvider {
    client: aws_sdk_kms::Client,
    /// Classification → key id, ARN or alias (`[keys.kms]`); the entry
    /// `system`, when present, wraps the service-held secrets.
    keys: BTreeMap<String, String>,
}

impl KmsKeyProvider {
    pub fn new(client: aws_sdk_kms::Client, keys: BTreeMap<String, String>) -> Self {
        Self { client, keys }
    }

    pub fn client(&self) -> &aws_sdk_kms::Client {
        &self.client
    }

    /// The KMS key for a context: the classification's, or for a
    /// service-held secret (a context with a `purpose`) the `system` key
    /// when configured.
    fn key_for(&self, ctx: &EncryptionContext) -> Result<&str, KeyError> {
        if ctx.get("purpose").is_some()
            && let Some(k) = self.keys.get("system")
        {
            return Ok(k);
        }
        let class = ctx
            .get("classification")
            .unwrap_or(DEFAULT_SYSTEM_CLASSIFICATION);
        self.keys
            .get(class)
            .map(String::as_str)
            .ok_or_else(|| KeyError::Config(format!("no KMS key for classification {class}")))
    }

    /// Re-wraps `wrapped` under `to_key` with the same context (KMS
    /// ReEncrypt: the plaintext stays inside KMS).
    pub async fn reencrypt(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
        to_key: &str,
    ) -> Result<WrappedKey, KeyError> {
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.blob.clone()))
            .source_key_id(&wrapped.key_id)
            .set_source_encryption_context(Some(ctx.to_map()))
            .destination_key_id(to_key)
            .set_destination_encryption_context(Some(ctx.to_map()))
            .send()
            .await
            .map_err(|e| key_error(Failure::of("ReEncrypt", &e)))?;
        match (out.key_id, out.ciphertext_blob) {
            (Some(key_id), Some(blob)) => Ok(WrappedKey {
                key_id,
                blob: blob.into_inner(),
            }),
            _ => Err(KeyError::Unavailable(
                "ReEncrypt: incomplete response".into(),
            )),
        }
    }

    /// The ARN of a key id, ARN or alias (KMS DescribeKey).
    pub async fn arn_of(&self, key: &str) -> Result<String, KeyError> {
        let out = self
            .client
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| key_error(Failure::of("DescribeKey", &e)))?;
        out.key_metadata
            .and_then(|m| m.arn)
            .ok_or_else(|| KeyError::Unavailable("DescribeKey: incomplete response".into()))
    }
}

/// KMS codes meaning the ciphertext does not open under this key and
/// context: tampering, a moved item or a wrong context.
const UNWRAP_CODES: &[&str] = &["InvalidCiphertextException", "IncorrectKeyException"];

fn key_error(f: Failure) -> KeyError {
    match f.code() {
        Some(c) if UNWRAP_CODES.contains(&c) => KeyError::Unwrap,
        // A disabled, deleted or forbidden key fails closed as 503: an
        // operator can fix it without restarting us, and we recover then.
        _ => KeyError::Unavailable(f.text().to_owned()),
    }
}

/// Takes a 32-byte plaintext out of a KMS response, wiping the copy.
fn data_key(plaintext: Option<Blob>) -> Result<DataKey, KeyError> {
    let mut bytes = plaintext.map(Blob::into_inner).unwrap_or_default();
    let key = <[u8; 32]>::try_from(bytes.as_slice())
        .map(DataKey::from_bytes)
        .map_err(|_| KeyError::Unavailable("KMS returned a key of the wrong size".into()));
    bytes.zeroize();
    key
}

#[async_trait]
impl KeyProvider for KmsKeyProvider {
    fn kind(&self) -> &'static str {
        "kms"
    }

    async fn generate_data_key(
        &self,
        ctx: &EncryptionContext,
    ) -> Result<(DataKey, WrappedKey), KeyError> {
        let key_id = self.key_for(ctx)?;
        let out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(ctx.to_map()))
            .send()
            .await
            .map_err(|e| key_error(Failure::of("GenerateDataKey", &e)))?;
        let wrapped = match (out.key_id, out.ciphertext_blob) {
            (Some(key_id), Some(blob)) => WrappedKey {
                key_id,
                blob: blob.into_inner(),
            },
            _ => {
                return Err(KeyError::Unavailable(
                    "GenerateDataKey: incomplete response".into(),
                ));
            }
        };
        Ok((data_key(out.plaintext)?, wrapped))
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KeyError> {
        // Naming the key pins the call to the key that wrapped it, so a
        // blob cannot be steered to another key we may use.
        let out = self
            .client
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped.blob.clone()))
            .key_id(&wrapped.key_id)
            .set_encryption_context(Some(ctx.to_map()))
            .send()
            .await
            .map_err(|e| key_error(Failure::of("Decrypt", &e)))?;
        data_key(out.plaintext)
    }

    async fn check(&self) -> Result<(), KeyError> {
        for key in self.keys.values() {
            self.arn_of(key).await?;
        }
        Ok(())
    }
}
