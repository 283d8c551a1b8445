//! Reading a table through its log: the DataFusion table provider of a version (optionally only
//! some of its files), and what changed between two versions, for readers that follow a table
//! incrementally (the monitor).

use std::sync::Arc;

use deltalake_core::datafusion::catalog::TableProvider;
use deltalake_core::datafusion::datasource::empty::EmptyTable;
use deltalake_core::datafusion::prelude::SessionContext;
use deltalake_core::kernel::Action;
use deltalake_core::logstore::get_actions;

use crate::{DataFile, Table, TableError};

/// What changed in a table after a version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// The version read up to.
    pub version: u64,
    /// Paths of files added with new rows (appends).
    pub added: Vec<String>,
    /// Paths of files removed with their rows (deletes, retention).
    pub removed: Vec<String>,
    /// Files rewritten without changing rows (optimize, `dataChange = false`), commit by
    /// commit in log order.
    pub rewrites: Vec<Rewrite>,
    /// A commit in between is no longer in the log (cleaned up after a checkpoint), or the
    /// schema changed: the reader should start over from the current version's files.
    pub restart: bool,
}

/// One commit's rewrite: the files it removed and the files it added in their place, holding
/// the same rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewrite {
    pub version: u64,
    pub removed: Vec<String>,
    pub added: Vec<String>,
}

/// A path as an action writes it (percent-encoded), as [`DataFile::path`] gives it.
fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()
}

impl Table {
    /// Registers the loaded version as table `name` in `ctx` (its object store too), restricted
    /// to `only` when given. Partition columns are columns of the result.
    pub async fn register(
        &self,
        ctx: &SessionContext,
        name: &str,
        only: Option<&[DataFile]>,
    ) -> Result<(), TableError> {
        let derr = |source| TableError::DataFusion { location: self.location().to_string(), source: Box::new(source) };
        self.delta().update_datafusion_session(&ctx.state()).map_err(|e| self.derr(e))?;
        let provider: Arc<dyn TableProvider> = match only {
            Some([]) => Arc::new(EmptyTable::new(self.arrow_schema()?)),
            Some(files) => Arc::new(
                self.delta()
                    .table_provider()
                    .with_file_paths(files.iter().map(|f| f.path.clone()))
                    .build()
                    .await
                    .map_err(derr)?,
            ),
            None => Arc::new(self.delta().table_provider().build().await.map_err(derr)?),
        };
        ctx.register_table(name, provider).map_err(derr)?;
        Ok(())
    }

    /// What the commits after `from` (up to the loaded version) changed. Paths as
    /// [`DataFile::path`] gives them.
    pub async fn changes_since(&self, from: u64) -> Result<Changes, TableError> {
        let to = self.version().unwrap_or(0);
        let mut c = Changes { version: to, ..Default::default() };
        // a version past the table's: the table was made again since
        if from > to {
            c.restart = true;
            return Ok(c);
        }
        let log = self.delta().log_store();
        for v in (from + 1)..=to {
            let Some(bytes) = log.read_commit_entry(v).await.map_err(|e| self.derr(e))? else {
                c.restart = true;
                return Ok(c);
            };
            let mut rewrite = Rewrite { version: v, ..Default::default() };
            for action in get_actions(v, &bytes).map_err(|e| self.derr(e))? {
                match action {
                    Action::Add(a) if a.data_change => c.added.push(decoded(&a.path)),
                    Action::Add(a) => rewrite.added.push(decoded(&a.path)),
                    Action::Remove(r) if r.data_change => c.removed.push(decoded(&r.path)),
                    Action::Remove(r) => rewrite.removed.push(decoded(&r.path)),
                    Action::Metadata(_) => c.restart = true,
                    _ => {}
                }
            }
            if !(rewrite.added.is_empty() && rewrite.removed.is_empty()) {
                c.rewrites.push(rewrite);
            }
        }
        Ok(c)
    }
}
