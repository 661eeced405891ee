//! Scripted tests.
