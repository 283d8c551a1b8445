//! Sluice's tables (inference, labels, monitor metrics) as Delta Lake tables, through delta-rs:
//! where a table lives ([`Location`]: a local directory or an `s3://` prefix), appends that
//! commit once per flush and never twice ([`Table::stage`], [`Table::commit`]), readers that
//! take the files of a version from the log ([`Table::files`], [`Table::register`],
//! [`Table::changes_since`]), and upkeep ([`Table::optimize`], [`Table::vacuum`],
//! [`Table::remove_partitions_before`]).
//!
//! Everything here is async (delta-rs needs a Tokio runtime); the gateway's writer threads run
//! it on a current-thread runtime of their own.

mod error;
mod location;
mod read;
mod table;
mod upkeep;

pub use error::TableError;
pub use location::{Location, S3Options, create_if_absent, files_under, register_s3};
pub use read::{Changes, Rewrite};
pub use table::{DataFile, Selector, Staged, Table, TableSpec, set_writer_name};
pub use upkeep::{Optimized, Retained, Vacuumed};

/// The Delta crates this one is built on, for callers that need their types.
pub use deltalake_core;

#[cfg(test)]
mod tests;
