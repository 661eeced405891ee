//! Tests for CHAP.
use super::*;
