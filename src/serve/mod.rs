//! `ovl serve`: the embedded HTTP, TFTP and DHCP servers of the PXE boot chain.
pub mod public;
pub mod tftp;
