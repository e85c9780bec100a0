//! AWS clients for the production backends (DynamoDB and KMS).
//!
//! Credentials and region come from the standard chain (environment,
//! profile, SSO, web identity, ECS, IMDS) and endpoints honour
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB` and
//! `AWS_ENDPOINT_URL_KMS`, all through `aws-config`. On top of the SDK's
//! defaults we bound every call in time, so an outage answers 503 within
//! seconds instead of holding a request open.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::error::SdkError;

/// Connecting to an AWS endpoint: a healthy one answers in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt of one call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// A call with its retries: the longest a request waits on AWS.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(8);
/// Attempts per call; throttling and transient faults are retried with
/// exponential backoff and jitter by the SDK's standard retry strategy.
const MAX_ATTEMPTS: u32 = 4;

/// The clients the service needs.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
}

impl Clients {
    /// Loads the standard AWS configuration chain. Fails when no region is
    /// found, which would otherwise fail every call later.
    pub async fn from_env() -> Result<Self, String> {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
        if sdk.region().is_none() {
            return Err(
                "no AWS region: set AWS_REGION (or a region in the AWS profile)".to_owned(),
            );
        }
        Ok(Self::from_sdk(&sdk))
    }

    /// Clients from an already loaded configuration, with our timeouts and
    /// retries. Tests use this to point at an emulator.
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(50));
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk)
            .timeout_config(timeouts.clone())
            .retry_config(retries.clone())
            .build();
        let kms = aws_sdk_kms::config::Builder::from(sdk)
            .timeout_config(timeouts)
            .retry_config(retries)
            .build();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            kms: aws_sdk_kms::Client::from_conf(kms),
        }
    }
}

/// How an AWS call failed, reduced to what the caller acts on. The text
/// names the operation and the AWS error code only: AWS messages can echo
/// request parameters, so they are never carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The service could not be reached, timed out, throttled us past our
    /// retries or had an internal error: answer 503, retry later.
    Unavailable(String),
    /// The service answered with an error code the caller may act on.
    Code { code: String, text: String },
}

impl Failure {
    /// Classifies an SDK error from `operation`.
    pub fn of<E, R>(operation: &str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata,
    {
        match err {
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or("Unknown").to_owned();
                let text = format!("{operation}: {code}");
                if TRANSIENT_CODES.contains(&code.as_str()) {
                    Failure::Unavailable(text)
                } else {
                    Failure::Code { code, text }
                }
            }
            SdkError::TimeoutError(_) => {
                Failure::Unavailable(format!("{operation}: {OUTCOME_UNKNOWN_TIMEOUT}"))
            }
            SdkError::DispatchFailure(_) => {
                Failure::Unavailable(format!("{operation}: could not reach the endpoint"))
            }
            SdkError::ResponseError(_) => {
                Failure::Unavailable(format!("{operation}: {OUTCOME_UNKNOWN_RESPONSE}"))
            }
            _ => Failure::Unavailable(format!("{operation}: request not sent")),
        }
    }

    /// The AWS error code, when the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Code { code, .. } => Some(code),
            Failure::Unavailable(_) => None,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Failure::Unavailable(t) | Failure::Code { text: t, .. } => t,
        }
    }
}

/// The endings of a [`Failure::Unavailable`] whose request went out and
/// got no answer that could be read: a write may have landed
/// ([`crate::store::StoreError::may_have_landed`]).
pub const OUTCOME_UNKNOWN_TIMEOUT: &str = "timed out";
/// See [`OUTCOME_UNKNOWN_TIMEOUT`].
pub const OUTCOME_UNKNOWN_RESPONSE: &str = "unreadable response";

/// Error codes that pass: throttling, internal errors and contention.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "LimitExceededException",
];
