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
    /// Paths of files rewritten without changing rows (optimize): added and removed.
    pub rewritten_added: Vec<String>,
    pub rewritten_removed: Vec<String>,
    /// A commit in between is no longer in the log (cleaned up after a checkpoint), or the
    /// schema changed: the reader should start over from the current version's files.
    pub restart: bool,
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

    /// What the commits after `from` (up to the loaded version) changed.
    pub async fn changes_since(&self, from: u64) -> Result<Changes, TableError> {
        let to = self.version().unwrap_or(0);
        let mut c = Changes { version: to, ..Default::default() };
        let log = self.delta().log_store();
        for v in (from + 1)..=to {
            let Some(bytes) = log.read_commit_entry(v).await.map_err(|e| self.derr(e))? else {
                c.restart = true;
                return Ok(c);
            };
            for action in get_actions(v, &bytes).map_err(|e| self.derr(e))? {
                match action {
                    Action::Add(a) if a.data_change => c.added.push(a.path),
                    Action::Add(a) => c.rewritten_added.push(a.path),
                    Action::Remove(r) if r.data_change => c.removed.push(r.path),
                    Action::Remove(r) => c.rewritten_removed.push(r.path),
                    Action::Metadata(_) => c.restart = true,
                    _ => {}
                }
            }
        }
        Ok(c)
    }
}
