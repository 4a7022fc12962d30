//! econtext-bootstrap
pub mod minimize;
