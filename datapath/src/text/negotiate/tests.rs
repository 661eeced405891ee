//! Tests for negotiation.
use super::*;
