//! The only crate that speaks Stripe: webhook signatures, tolerant event parsing of
//! both API shapes (2023 and 2025+), the API client (feature `client`, on by default),
//! and realistic test events for `tally trigger`.

#[cfg(feature = "client")]
pub mod api;
#[cfg(feature = "client")]
pub mod client;
pub mod fake;
#[cfg(feature = "client")]
pub mod inspect;
pub mod parse;
pub mod signature;

#[cfg(feature = "client")]
pub use client::{ClientOptions, StripeClient, StripeError};
pub use parse::{ParseError, ParsedEvent, parse_event};
pub use signature::{SignatureError, Verifier, sign};
