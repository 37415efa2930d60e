//! Domain errors: the ways a credit operation can be refused.

/// A refusal by the credit rules; each maps to one stable HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("insufficient credits: needed {needed}, available {available}")]
    InsufficientCredits { needed: i64, available: i64 },
    #[error("invalid amount {0}")]
    InvalidAmount(i64),
}
