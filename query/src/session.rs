//! The embedded SQL entry points: a [`Database`] wraps an open storage
//! directory; each [`Session`] is a DataFusion context whose `basalt.public`
//! schema is the storage catalog.

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use basalt_storage::{Db, Options};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableProvider;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::table::StorageTable;

pub const CATALOG: &str = "basalt";
pub const SCHEMA: &str = "public";

/// An open database, shared by its sessions.
#[derive(Debug, Clone)]
pub struct Database {
    db: Arc<Db>,
}

impl Database {
    pub fn open(path: impl AsRef<Path>) -> basalt_storage::Result<Database> {
        Ok(Database {
            db: Arc::new(Db::open(path, Options::default())?),
        })
    }

    pub fn from_storage(db: Arc<Db>) -> Database {
        Database { db }
    }

    pub fn storage(&self) -> &Arc<Db> {
        &self.db
    }

    pub fn session(&self) -> Result<Session> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(
            SCHEMA,
            Arc::new(StorageSchema {
                db: self.db.clone(),
            }),
        )?;
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        Ok(Session { ctx })
    }
}

/// One connection's SQL state.
pub struct Session {
    ctx: SessionContext,
}

impl Session {
    /// Runs a query and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.ctx.sql(sql).await?.collect().await
    }
}

/// The storage catalog as DataFusion's `public` schema.
#[derive(Debug)]
struct StorageSchema {
    db: Arc<Db>,
}

#[async_trait]
impl SchemaProvider for StorageSchema {
    fn table_names(&self) -> Vec<String> {
        self.db.tables().into_iter().map(|t| t.name).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        match self.db.table(name) {
            Ok(def) => Ok(Some(Arc::new(StorageTable::new(self.db.clone(), def)))),
            Err(basalt_storage::Error::TableNotFound(_)) => Ok(None),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.table(name).is_ok()
    }
}
