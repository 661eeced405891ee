//! Portals and connection driving (in progress).
